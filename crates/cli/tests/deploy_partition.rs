//! A leader isolated from its followers by a TCP proxy between the `mako server` processes:
//! it releases nothing more, the majority elects a new leader, and after healing no write
//! sent to the old leader during the isolation is visible anywhere, while every
//! acknowledged write is.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, poll, serving_leader};
use mako_deploy::{LocalTopology, PeerProxy};

#[test]
fn isolated_leader_releases_nothing_and_loses_no_acknowledged_write() {
    let mut topo = LocalTopology::new(1, 3);
    topo.extra = "timeouts:\n  release_ms: 1500\n".into();
    let c = Cluster::prepare(&topo, None);
    let proxy = PeerProxy::start(&c.cfg()).expect("proxy listens");
    let mut c = Cluster::boot(c, |site| proxy.peer_listen_args(site));
    assert!(proxy.forwarded() > 0, "peer links go through the proxy");
    let sites: Vec<String> = ["s0r0", "s0r1", "s0r2"].map(String::from).to_vec();

    let mut acked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut cl = c.client();
    for i in 0..20 {
        let (k, v) = (format!("pre{i:02}"), format!("p{i}"));
        cl.put(k.as_bytes(), v.as_bytes())
            .expect("put before the partition");
        acked.push((k.into_bytes(), v.into_bytes()));
    }
    let old = c.dep.leader(0).expect("a leader");
    let others: Vec<String> = sites.iter().filter(|s| **s != old).cloned().collect();

    assert!(proxy.isolate(&old));
    let isolated_at = Instant::now();
    // A client that knows only the old leader: nothing it writes may be released.
    let mut iso = c.client_of(&[old.as_str()], Duration::from_secs(3), 1);
    let mut attempted = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..4 {
        let k = format!("iso{i:02}").into_bytes();
        let r = iso.put(&k, b"x");
        assert!(
            r.is_err(),
            "the isolated leader {old} released a write ({}), {:?} after the isolation",
            String::from_utf8_lossy(&k),
            isolated_at.elapsed()
        );
        outcomes.push(format!("{:?}", r.err()));
        attempted.push(k);
    }
    eprintln!("writes to the isolated leader {old}: {outcomes:?}");

    // The majority elects a new leader (its status says so) and serves writes.
    let mut status = c.client();
    let (new, _) = poll(Duration::from_secs(30), || {
        serving_leader(&mut status, &others)
    })
    .unwrap_or_else(|| panic!("no new leader among {others:?} within 30 s"));
    eprintln!(
        "new leader {new} serving {:?} after the isolation",
        isolated_at.elapsed()
    );
    let others_ref: Vec<&str> = others.iter().map(String::as_str).collect();
    let mut maj = c.client_of(&others_ref, Duration::from_secs(30), 10);
    for i in 0..20 {
        let (k, v) = (format!("maj{i:02}"), format!("m{i}"));
        maj.put(k.as_bytes(), v.as_bytes())
            .expect("the majority serves writes");
        acked.push((k.into_bytes(), v.into_bytes()));
    }
    // The isolated site, asked directly, does not serve as a leader of a majority.
    let st = status.status(&old).expect("the old leader answers status");
    eprintln!(
        "old leader {old} during isolation: role {} serving {} term {} epoch {}",
        st.role, st.serving, st.term, st.epoch
    );

    // Heal: every replica converges, no write of the isolation is visible, every
    // acknowledged one is.
    proxy.heal();
    c.converge(0, "kv", Duration::from_secs(60));
    let mut cl = c.client();
    for k in &attempted {
        assert_eq!(
            cl.get(k).expect("read after healing"),
            None,
            "{} (sent to the isolated leader) is visible",
            String::from_utf8_lossy(k)
        );
    }
    for (k, v) in &acked {
        assert_eq!(
            cl.get(k).expect("read after healing").as_ref(),
            Some(v),
            "acknowledged {} lost",
            String::from_utf8_lossy(k)
        );
    }
    assert!(
        proxy.refused() > 0,
        "the proxy refused the isolated node's links"
    );
}
