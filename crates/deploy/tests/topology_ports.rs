//! The ports a `LocalTopology` writes stay its own while other sockets come and go.

use std::net::TcpListener;

use mako_deploy::LocalTopology;

/// Every `…_port: N` value of a written config.
fn ports_of(yaml: &str) -> Vec<u16> {
    yaml.split("_port: ")
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a port number")
        })
        .collect()
}

#[test]
fn sockets_bound_to_any_port_never_get_a_topology_port() {
    let dir = std::env::temp_dir().join(format!("mako-topo-ports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut topo = LocalTopology::new(2, 3);
    topo.redis = true;
    let path = topo.write(&dir).unwrap();
    let ports = ports_of(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(ports.len(), 2 * 3 * 4);
    // What other tests on the machine do meanwhile: bind "any port" (and close it again).
    // Batches stay under a small open-file limit; together they cover about half the
    // ephemeral range, so a topology port inside it would almost surely be handed out.
    for _ in 0..16 {
        let batch: Vec<TcpListener> = (0..900)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        for l in &batch {
            let got = l.local_addr().unwrap().port();
            assert!(
                !ports.contains(&got),
                "the OS handed out topology port {got}"
            );
        }
    }
    // And the sites can still bind every one of them.
    for p in ports {
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn topologies_written_one_after_another_share_no_port() {
    let dir = std::env::temp_dir().join(format!("mako-topo-two-{}", std::process::id()));
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let topo = LocalTopology::new(1, 3);
    let pa = ports_of(&std::fs::read_to_string(topo.write(&a).unwrap()).unwrap());
    let pb = ports_of(&std::fs::read_to_string(topo.write(&b).unwrap()).unwrap());
    assert_eq!((pa.len(), pb.len()), (9, 9));
    assert!(
        pa.iter().all(|p| !pb.contains(p)),
        "{pa:?} and {pb:?} overlap"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run as a child by the test below: prints the ports one reservation gets in this process.
#[test]
fn child_prints_reserved_ports() {
    if std::env::var_os("MAKO_PORTS_CHILD").is_none() {
        return;
    }
    let ports = mako_deploy::ports::reserve(5).unwrap();
    println!("PORTS {ports:?}");
}

#[test]
fn another_process_gets_other_ports_while_these_are_held() {
    let mine = mako_deploy::ports::reserve(5).unwrap();
    // Another temporary directory too (as another container sharing the host's network
    // would have): ports belong to the network, so must their ownership.
    let elsewhere = std::env::temp_dir().join(format!("mako-ports-child-{}", std::process::id()));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_prints_reserved_ports", "--exact", "--nocapture"])
        .env("MAKO_PORTS_CHILD", "1")
        .env("TMPDIR", &elsewhere)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&elsewhere).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PORTS "))
        .unwrap_or_else(|| panic!("no ports printed: {text}"));
    let theirs: Vec<u16> = line
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(theirs.len(), 5);
    // Blocks are owned whole, so not even a neighbour of ours is theirs.
    let (lo, hi) = (mine.iter().min().unwrap(), mine.iter().max().unwrap());
    assert!(
        theirs.iter().all(|p| p < lo || p > hi),
        "{mine:?} and {theirs:?} overlap"
    );
}
