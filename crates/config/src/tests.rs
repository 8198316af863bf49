//! Tests of loading, merging, error messages, validation rules and the shipped files.

use std::path::PathBuf;

use super::*;

/// One shard of three replicas on one host.
const TOPO: &str = "
hosts:
  h1: {address: 127.0.0.1}
sites:
  - {name: a, host: h1, shard: 0, replica: 0, preferred_leader: true, peer_port: 9000, client_port: 9010}
  - {name: b, host: h1, shard: 0, replica: 1, peer_port: 9001, client_port: 9011}
  - {name: c, host: h1, shard: 0, replica: 2, peer_port: 9002, client_port: 9012, metrics_port: 9022}
";

/// Two shards of two replicas on two host names sharing an address.
const TOPO2: &str = "
data_dir: /tmp/m
hosts:
  h1: {address: 127.0.0.1}
  h2: {address: 127.0.0.1}
sites:
  - {name: a, host: h1, shard: 0, replica: 0, peer_port: 9000, client_port: 9010}
  - {name: b, host: h1, shard: 0, replica: 1, peer_port: 9001, client_port: 9011}
  - {name: c, host: h2, shard: 1, replica: 0, peer_port: 9002, client_port: 9012}
  - {name: d, host: h2, shard: 1, replica: 1, peer_port: 9003, client_port: 9013, data_dir: /srv/d}
";

fn ok(docs: &[(&str, &str)]) -> Config {
    match Config::from_yaml_strs(docs) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn err(docs: &[(&str, &str)]) -> String {
    match Config::from_yaml_strs(docs) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "error spans lines: {s:?}");
            s
        }
    }
}

/// `TOPO` with `extra` appended (one file).
fn with(extra: &str) -> String {
    format!("{TOPO}\n{extra}")
}

fn assert_starts(msg: &str, prefix: &str) {
    assert!(
        msg.starts_with(prefix),
        "{msg:?} does not start with {prefix:?}"
    );
}

// ---- loading and defaults --------------------------------------------------------------

#[test]
fn a_minimal_topology_gets_the_documented_defaults() {
    let c = ok(&[("t.yml", TOPO)]);
    assert_eq!(c.replication, Replication::Raft);
    assert_eq!(c.durability, Durability::Fsync);
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(
        c.raft,
        RaftSpec {
            heartbeat_ms: 50,
            election_ms: (400, 700)
        }
    );
    assert_eq!(c.batch, BatchSpec::default());
    assert_eq!(c.workers, 2);
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.client, ClientLimits::default());
    assert_eq!(c.security, Security::default());
    assert!(c.meta.is_none());
    assert!(c.meta_members().is_empty());
    assert_eq!((c.shards(), c.replicas()), (1, 3));
    assert_eq!(c.sources, vec!["t.yml".to_owned()]);
}

#[test]
fn addresses_ids_and_directories() {
    let c = ok(&[("t.yml", TOPO2)]);
    assert_eq!((c.shards(), c.replicas()), (2, 2));
    let ids: Vec<u64> = c.sites.iter().map(|s| c.node_id(s)).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let d = c.site("d").expect("site d");
    assert_eq!(c.node_id(d), 4);
    assert_eq!(c.site_by_node_id(3).map(|s| s.name.as_str()), Some("c"));
    assert_eq!(c.peer_addr(d), "127.0.0.1:9003".parse().expect("addr"));
    assert_eq!(c.client_addr(d), "127.0.0.1:9013".parse().expect("addr"));
    assert_eq!(c.metrics_addr(d), None);
    assert_eq!(c.redis_addr(d), None);
    assert_eq!(c.site_data_dir(d), PathBuf::from("/srv/d"));
    assert_eq!(c.site_data_dir(&c.sites[0]), PathBuf::from("/tmp/m/a"));
    assert!(c.site("zz").is_none());
    let names: Vec<&str> = c.shard_sites(1).iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["c", "d"]);
    assert!(c.preferred_leader(0).is_none());

    let c = ok(&[("t.yml", TOPO)]);
    let s = c.site("c").expect("site c");
    assert_eq!(
        c.metrics_addr(s),
        Some("127.0.0.1:9022".parse().expect("addr"))
    );
    assert_eq!(c.preferred_leader(0).map(|s| s.name.as_str()), Some("a"));
}

#[test]
fn a_redis_port_is_optional_and_checked_like_the_others() {
    let c = ok(&[(
        "t.yml",
        &TOPO.replace("metrics_port: 9022", "redis_port: 9030"),
    )]);
    let s = c.site("c").expect("site c");
    assert_eq!(
        c.redis_addr(s),
        Some("127.0.0.1:9030".parse().expect("addr"))
    );
    assert_eq!(c.redis_addr(c.site("a").expect("site a")), None);
    assert_eq!(
        err(&[(
            "t.yml",
            &TOPO.replace("metrics_port: 9022", "redis_port: 9010")
        )]),
        "t.yml: sites[2].redis_port: 127.0.0.1:9010 is already used by sites[0].client_port"
    );
    assert_eq!(
        err(&[(
            "t.yml",
            &TOPO.replace("metrics_port: 9022", "redis_port: 0")
        )]),
        "t.yml: sites[2].redis_port: port 0 is not allowed (peers and clients must know the port)"
    );
}

#[test]
fn an_unknown_site_name_lists_the_known_ones() {
    let c = ok(&[("p.yml", "workers: 2"), ("t.yml", TOPO)]);
    assert_eq!(c.require_site("b").map(|s| s.replica).ok(), Some(1));
    let e = c.require_site("s9").expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "p.yml + t.yml: no site is named \"s9\" (sites: a, b, c)"
    );
}

#[test]
fn meta_members_are_the_named_sites_node_ids() {
    let c = ok(&[("t.yml", &format!("{TOPO2}\nmeta: {{members: [b, d, a]}}"))]);
    assert_eq!(c.meta_members(), vec![2, 4, 1]);
}

#[test]
fn the_kv_table_always_exists_hash_partitioned() {
    let c = ok(&[("t.yml", TOPO2)]);
    assert_eq!(
        c.table(DEFAULT_TABLE),
        Some(&TableSpec {
            name: "kv".into(),
            partition: Partition::Hash
        })
    );
    assert_eq!(
        c.shard_of("kv", b"user:42"),
        Some(shard_of_hash(b"user:42", 2))
    );
    assert_eq!(c.shard_of("nope", b"k"), None);
}

#[test]
fn tables_hash_and_range() {
    let c = ok(&[(
        "t.yml",
        &format!(
            "{TOPO2}\ntables:\n  ev: {{partition: range, splits: [m]}}\n  h: {{partition: hash}}\n  d: {{}}"
        ),
    )]);
    assert_eq!(c.shard_of("ev", b"a"), Some(0));
    assert_eq!(c.shard_of("ev", b"m"), Some(1));
    assert_eq!(c.shard_of("ev", b"zz"), Some(1));
    assert_eq!(c.table("h").map(|t| &t.partition), Some(&Partition::Hash));
    assert_eq!(c.table("d").map(|t| &t.partition), Some(&Partition::Hash));
    assert!(c.table("kv").is_some());
}

#[test]
fn paxos_loads_and_is_reported() {
    let c = ok(&[("t.yml", &with("replication: paxos"))]);
    assert_eq!(c.replication, Replication::Paxos);
}

// ---- merging -----------------------------------------------------------------------------

#[test]
fn a_later_file_overrides_an_earlier_one() {
    let c = ok(&[
        ("p.yml", "durability: fsync"),
        ("t.yml", &with("durability: memory")),
    ]);
    assert_eq!(c.durability, Durability::Memory);
    let c = ok(&[
        ("t.yml", &with("durability: memory")),
        ("p.yml", "durability: buffered"),
    ]);
    assert_eq!(c.durability, Durability::Buffered);
    assert_eq!(c.sources, vec!["t.yml".to_owned(), "p.yml".to_owned()]);
}

#[test]
fn mappings_merge_deeply_and_sequences_are_replaced_whole() {
    let c = ok(&[
        ("p.yml", "raft: {heartbeat_ms: 20, election_ms: [100, 200]}"),
        ("t.yml", TOPO),
        (
            "o.yml",
            "raft: {election_ms: [300, 500]}\nsites:\n  - {name: x, host: h1, shard: 0, replica: 0, peer_port: 1, client_port: 2}",
        ),
    ]);
    assert_eq!(
        c.raft,
        RaftSpec {
            heartbeat_ms: 20,
            election_ms: (300, 500)
        }
    );
    assert_eq!(
        c.sites.len(),
        1,
        "the later sites list replaces the earlier one"
    );
    assert_eq!(c.sites[0].name, "x");
}

#[test]
fn null_in_a_later_file_restores_the_default() {
    let c = ok(&[
        ("t.yml", &with("workers: 7\nmeta: {members: [a]}")),
        ("o.yml", "workers: ~\nmeta: ~"),
    ]);
    assert_eq!(c.workers, DEFAULT_WORKERS);
    assert!(c.meta.is_none());
}

#[test]
fn a_key_reset_to_its_default_is_no_longer_blamed_on_the_file_that_set_it_before() {
    let s = err(&[
        (
            "p.yml",
            "raft: {heartbeat_ms: 10, election_ms: [900, 1000]}",
        ),
        ("t.yml", TOPO),
        ("r.yml", "raft: ~"),
        ("o.yml", "raft: {heartbeat_ms: 300}"),
    ]);
    assert_eq!(
        s,
        "o.yml: raft.election_ms: min 400 must be at least twice raft.heartbeat_ms (300)"
    );
}

#[test]
fn an_empty_file_changes_nothing() {
    let c = ok(&[("t.yml", TOPO), ("empty.yml", "# only a comment\n")]);
    assert_eq!(c.sites.len(), 3);
}

#[test]
fn load_reads_files_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.yml");
    let b = dir.path().join("b.yml");
    std::fs::write(&a, with("durability: memory")).expect("write");
    std::fs::write(&b, "durability: buffered\n").expect("write");
    let c = Config::load(&[&a, &b]).expect("loads");
    assert_eq!(c.durability, Durability::Buffered);
    let c = Config::load(&[&b, &a]).expect("loads");
    assert_eq!(c.durability, Durability::Memory);
}

// ---- error messages ----------------------------------------------------------------------

#[test]
fn no_file_is_an_error() {
    let none: [&str; 0] = [];
    let e = Config::load(&none).expect_err("no files");
    assert!(matches!(e, ConfigError::NoFiles), "{e}");
}

#[test]
fn a_missing_file_is_named() {
    let e = Config::load(&["/nonexistent/mako/x.yml"]).expect_err("missing");
    let s = e.to_string();
    assert_starts(&s, "/nonexistent/mako/x.yml: cannot read: ");
    assert!(s.contains("No such file"), "{s}");
}

#[test]
fn a_yaml_syntax_error_names_the_file_and_line() {
    let s = err(&[
        ("t.yml", TOPO),
        (
            "bad.yml",
            "raft:\n  heartbeat_ms: 5\n  election_ms: [1, 2\nworkers: 3\n",
        ),
    ]);
    assert_starts(&s, "bad.yml: ");
    assert!(s.contains("line "), "{s}");
}

#[test]
fn a_duplicate_key_is_a_syntax_error() {
    let s = err(&[("dup.yml", &with("workers: 1\nworkers: 2"))]);
    assert_starts(&s, "dup.yml: ");
    assert!(s.contains("duplicate"), "{s}");
}

#[test]
fn a_non_mapping_document_is_refused() {
    let s = err(&[("t.yml", TOPO), ("list.yml", "- 1\n- 2\n")]);
    assert_eq!(
        s,
        "list.yml: expected a mapping of keys at the top level, found a sequence"
    );
}

#[test]
fn an_unknown_top_level_key_is_named() {
    let s = err(&[("t.yml", TOPO), ("x.yml", "replicaton: raft")]);
    assert_starts(&s, "x.yml: replicaton: unknown key (expected one of ");
}

#[test]
fn an_unknown_nested_key_is_named() {
    let s = err(&[("t.yml", TOPO), ("x.yml", "raft: {heartbet_ms: 5}")]);
    assert_eq!(
        s,
        "x.yml: raft.heartbet_ms: unknown key (expected heartbeat_ms or election_ms)"
    );
}

#[test]
fn an_unknown_key_in_a_site_is_named_with_its_index() {
    let topo = TOPO.replace("replica: 1, peer_port", "replica: 1, pot: 3, peer_port");
    let s = err(&[("t.yml", &topo)]);
    assert_starts(&s, "t.yml: sites[1].pot: unknown key (expected one of ");
    let s = err(&[(
        "t.yml",
        &with("security: {tls: {cert: a, key: b, ca: c, pw: d}}"),
    )]);
    assert_starts(&s, "t.yml: security.tls.pw: unknown key");
    let s = err(&[("t.yml", &with("tables: {t: {partiton: hash}}"))]);
    assert_starts(&s, "t.yml: tables.t.partiton: unknown key");
}

#[test]
fn a_wrong_type_is_named() {
    let topo = TOPO.replace("name: c, host: h1, shard: 0", "name: c, host: h1, shard: x");
    let s = err(&[("1c1s3r.yml", &topo)]);
    assert_eq!(
        s,
        "1c1s3r.yml: sites[2].shard: expected a non-negative integer, found string \"x\""
    );
    let s = err(&[("t.yml", TOPO), ("o.yml", "durability: disk")]);
    assert_starts(&s, "o.yml: durability: unknown durability \"disk\"");
    let s = err(&[("t.yml", TOPO), ("o.yml", "replication: zab")]);
    assert_eq!(
        s,
        "o.yml: replication: unknown value `zab` (expected raft or paxos)"
    );
    let s = err(&[("t.yml", TOPO), ("o.yml", "raft: {election_ms: [1, 2, 3]}")]);
    assert_eq!(
        s,
        "o.yml: raft.election_ms: expected [min, max] (two integers), found 3 value(s)"
    );
    let s = err(&[("t.yml", TOPO), ("o.yml", "raft: {election_ms: [1, x]}")]);
    assert_starts(
        &s,
        "o.yml: raft.election_ms[1]: expected a non-negative integer",
    );
    let s = err(&[("t.yml", &TOPO.replace("9012", "70000"))]);
    assert_eq!(
        s,
        "t.yml: sites[2].client_port: expected an integer from 0 to 65535, found integer `70000`"
    );
    let s = err(&[("t.yml", &TOPO.replace("127.0.0.1", "localhost"))]);
    assert_eq!(
        s,
        "t.yml: hosts.h1.address: expected an IP address such as 127.0.0.1 (host names are not resolved)"
    );
    let s = err(&[("t.yml", TOPO), ("o.yml", "sites: 3")]);
    assert_eq!(s, "o.yml: sites: expected a sequence, found integer `3`");
}

#[test]
fn a_missing_required_key_is_named() {
    let topo = TOPO.replace("host: h1, shard: 0, replica: 1,", "shard: 0, replica: 1,");
    let s = err(&[("t.yml", &topo)]);
    assert_eq!(s, "t.yml: sites[1]: missing required key `host`");
}

#[test]
fn a_type_error_names_the_file_that_set_the_value() {
    let s = err(&[
        ("p.yml", "workers: 2"),
        ("t.yml", TOPO),
        ("o.yml", "workers: many"),
    ]);
    assert_starts(&s, "o.yml: workers: ");
}

// ---- validation and attribution ----------------------------------------------------------

#[test]
fn a_validation_error_names_the_file_that_last_set_the_key() {
    let p = "raft: {heartbeat_ms: 50, election_ms: [400, 700]}";
    let s = err(&[
        ("p.yml", p),
        ("t.yml", TOPO),
        ("o.yml", "raft: {election_ms: [500, 450]}"),
    ]);
    assert_eq!(
        s,
        "o.yml: raft.election_ms: [min, max] needs min < max, got [500, 450]"
    );
    // The heartbeat is raised by o.yml, but the rule is checked on election_ms, last set by p.yml.
    let s = err(&[
        ("p.yml", p),
        ("t.yml", TOPO),
        ("o.yml", "raft: {heartbeat_ms: 300}"),
    ]);
    assert_eq!(
        s,
        "p.yml: raft.election_ms: min 400 must be at least twice raft.heartbeat_ms (300)"
    );
    // A default inside a mapping names the last file that set something in that mapping.
    let s = err(&[("t.yml", TOPO), ("o.yml", "raft: {heartbeat_ms: 300}")]);
    assert_starts(&s, "o.yml: raft.election_ms: min 400 ");
}

#[test]
fn an_overriding_site_list_is_blamed_for_its_errors() {
    let bad =
        "sites:\n  - {name: a, host: h1, shard: 0, replica: 0, peer_port: 9000, client_port: 9000}";
    let s = err(&[("t.yml", TOPO), ("o.yml", bad)]);
    assert_starts(
        &s,
        "o.yml: sites[0].client_port: 127.0.0.1:9000 is already used by sites[0].peer_port",
    );
}

#[test]
fn sites_are_required() {
    let s = err(&[("p.yml", "workers: 2")]);
    assert_eq!(s, "p.yml: sites: at least one site is required");
    // A key no file set names every file.
    let s = err(&[("p.yml", "workers: 2"), ("q.yml", "durability: memory")]);
    assert_eq!(s, "p.yml + q.yml: sites: at least one site is required");
}

#[test]
fn site_names_are_unique_and_plain() {
    let s = err(&[("t.yml", &TOPO.replace("name: c", "name: a"))]);
    assert_eq!(
        s,
        "t.yml: sites[2].name: duplicate site name \"a\" (also sites[0])"
    );
    let s = err(&[("t.yml", &TOPO.replace("name: c", "name: \"../x\""))]);
    assert_starts(&s, "t.yml: sites[2].name: invalid site name \"../x\"");
}

#[test]
fn hosts_must_exist() {
    let s = err(&[(
        "t.yml",
        &TOPO.replace("name: b, host: h1", "name: b, host: h9"),
    )]);
    assert_eq!(s, "t.yml: sites[1].host: unknown host \"h9\" (hosts: h1)");
}

#[test]
fn shards_are_contiguous() {
    let s = err(&[("t.yml", &TOPO2.replace("shard: 1", "shard: 2"))]);
    assert_starts(&s, "t.yml: sites: no site has shard 1");
}

#[test]
fn extreme_numbers_are_errors_not_panics() {
    let s = err(&[("t.yml", &TOPO2.replace("shard: 1", "shard: 4294967295"))]);
    assert_starts(&s, "t.yml: sites: no site has shard 1");
    let s = err(&[("t.yml", &with("raft: {heartbeat_ms: 18446744073709551615}"))]);
    assert_starts(
        &s,
        "t.yml: raft.election_ms: min 400 must be at least twice",
    );
}

#[test]
fn replicas_are_contiguous_and_unique() {
    let s = err(&[("t.yml", &TOPO.replace("replica: 2", "replica: 3"))]);
    assert_eq!(
        s,
        "t.yml: sites[2].replica: shard 0 has no replica 2 (replicas must be numbered 0..R without gaps)"
    );
    let s = err(&[("t.yml", &TOPO.replace("replica: 2", "replica: 1"))]);
    assert_eq!(
        s,
        "t.yml: sites[2].replica: shard 0 replica 1 is also sites[1] (b)"
    );
}

#[test]
fn every_shard_has_the_same_number_of_replicas() {
    let extra =
        "  - {name: e, host: h2, shard: 1, replica: 2, peer_port: 9004, client_port: 9014}\n";
    let s = err(&[("t.yml", &format!("{TOPO2}{extra}"))]);
    assert_starts(
        &s,
        "t.yml: sites[2].shard: shard 1 has 3 replicas but shard 0 has 2",
    );
}

#[test]
fn at_most_one_preferred_leader_per_shard() {
    let topo = TOPO.replace("replica: 2,", "replica: 2, preferred_leader: true,");
    let s = err(&[("t.yml", &topo)]);
    assert_eq!(
        s,
        "t.yml: sites[2].preferred_leader: shard 0 already has a preferred leader (sites[0], a)"
    );
    // One per shard is fine.
    let topo = TOPO2
        .replace(
            "name: a, host: h1,",
            "name: a, host: h1, preferred_leader: true,",
        )
        .replace(
            "name: d, host: h2,",
            "name: d, host: h2, preferred_leader: true,",
        );
    let c = ok(&[("t.yml", &topo)]);
    assert_eq!(c.preferred_leader(1).map(|s| s.name.as_str()), Some("d"));
}

#[test]
fn listen_addresses_are_unique_across_sites_ports_and_host_names() {
    // Same host, a client port equal to another site's peer port.
    let s = err(&[("t.yml", &TOPO.replace("9011", "9000"))]);
    assert_eq!(
        s,
        "t.yml: sites[1].client_port: 127.0.0.1:9000 is already used by sites[0].peer_port"
    );
    // Two host names with one address.
    let s = err(&[("t.yml", &TOPO2.replace("9013", "9011"))]);
    assert_starts(
        &s,
        "t.yml: sites[3].client_port: 127.0.0.1:9011 is already used by sites[1].client_port",
    );
    // A metrics port.
    let s = err(&[(
        "t.yml",
        &TOPO.replace("metrics_port: 9022", "metrics_port: 9010"),
    )]);
    assert_starts(
        &s,
        "t.yml: sites[2].metrics_port: 127.0.0.1:9010 is already used by sites[0].client_port",
    );
    // The same port on different addresses is fine ...
    let topo = TOPO2
        .replace("h2: {address: 127.0.0.1}", "h2: {address: 127.0.0.2}")
        .replace("9003", "9000");
    ok(&[("t.yml", &topo)]);
    // ... unless one is the wildcard address.
    let topo = TOPO2
        .replace("h2: {address: 127.0.0.1}", "h2: {address: 0.0.0.0}")
        .replace("9003", "9000");
    let s = err(&[("t.yml", &topo)]);
    assert_starts(
        &s,
        "t.yml: sites[3].peer_port: 0.0.0.0:9000 is already used by sites[0].peer_port",
    );
}

#[test]
fn port_zero_is_refused() {
    let s = err(&[("t.yml", &TOPO.replace("9001", "0"))]);
    assert_starts(&s, "t.yml: sites[1].peer_port: port 0 is not allowed");
}

#[test]
fn data_directories_are_distinct() {
    let topo = TOPO2.replace("name: b, host: h1,", "name: b, host: h1, data_dir: /srv/d,");
    let s = err(&[("t.yml", &topo)]);
    assert_eq!(
        s,
        "t.yml: sites[3].data_dir: data directory /srv/d is also that of sites[1] (b)"
    );
}

#[test]
fn meta_members_exist_are_distinct_and_odd() {
    let s = err(&[("t.yml", &with("meta: {members: [a, zz, c]}"))]);
    assert_eq!(s, "t.yml: meta.members[1]: no site is named \"zz\"");
    let s = err(&[("t.yml", &with("meta: {members: [a, b, a]}"))]);
    assert_eq!(
        s,
        "t.yml: meta.members[2]: \"a\" is listed twice (also meta.members[0])"
    );
    let s = err(&[("t.yml", &with("meta: {members: [a, b]}"))]);
    assert_starts(&s, "t.yml: meta.members: needs an odd number of members");
    let s = err(&[("t.yml", &with("meta: {members: []}"))]);
    assert_starts(&s, "t.yml: meta.members: needs an odd number of members");
}

#[test]
fn raft_timing_rules() {
    let s = err(&[("t.yml", &with("raft: {election_ms: [400, 400]}"))]);
    assert_eq!(
        s,
        "t.yml: raft.election_ms: [min, max] needs min < max, got [400, 400]"
    );
    let s = err(&[("t.yml", &with("raft: {heartbeat_ms: 0}"))]);
    assert_eq!(s, "t.yml: raft.heartbeat_ms: must be positive");
    let s = err(&[(
        "t.yml",
        &with("raft: {heartbeat_ms: 201, election_ms: [401, 700]}"),
    )]);
    assert_starts(
        &s,
        "t.yml: raft.election_ms: min 401 must be at least twice raft.heartbeat_ms (201)",
    );
    ok(&[(
        "t.yml",
        &with("raft: {heartbeat_ms: 200, election_ms: [400, 401]}"),
    )]);
}

#[test]
fn counts_and_timeouts_are_positive() {
    for (yaml, key) in [
        ("workers: 0", "workers"),
        ("batch: {max_pieces: 0}", "batch.max_pieces"),
        ("batch: {max_bytes: 0}", "batch.max_bytes"),
        ("timeouts: {release_ms: 0}", "timeouts.release_ms"),
        ("timeouts: {request_ms: 0}", "timeouts.request_ms"),
        ("client: {idle_timeout_ms: 0}", "client.idle_timeout_ms"),
        (
            "client: {max_open_per_connection: 0}",
            "client.max_open_per_connection",
        ),
        ("client: {max_ops_per_txn: 0}", "client.max_ops_per_txn"),
        ("client: {max_connections: 0}", "client.max_connections"),
    ] {
        let s = err(&[("t.yml", TOPO), ("o.yml", yaml)]);
        assert_eq!(s, format!("o.yml: {key}: must be positive"));
    }
    let c = ok(&[
        ("t.yml", TOPO),
        (
            "o.yml",
            "batch: {linger_us: 0, group_commit: false}\nworkers: 4",
        ),
    ]);
    assert_eq!(
        (c.batch.linger_us, c.batch.group_commit, c.workers),
        (0, false, 4)
    );
    assert!(ok(&[("t.yml", TOPO)]).batch.group_commit, "on by default");
}

#[test]
fn range_splits_match_the_shards_and_ascend() {
    let t = |tables: &str| format!("{TOPO2}\ntables:\n{tables}");
    let s = err(&[("t.yml", &t("  ev: {partition: range, splits: [g, p]}"))]);
    assert_eq!(
        s,
        "t.yml: tables.ev.splits: has 2 split point(s); 2 shard(s) need 1"
    );
    let s = err(&[("t.yml", &t("  ev: {partition: range}"))]);
    assert_starts(
        &s,
        "t.yml: tables.ev.partition: range partitioning needs splits",
    );
    let s = err(&[("t.yml", &t("  ev: {partition: hash, splits: [g]}"))]);
    assert_starts(
        &s,
        "t.yml: tables.ev.splits: only a range-partitioned table has split points",
    );
    let s = err(&[("t.yml", &t("  ev: {partition: range, splits: [1]}"))]);
    assert_starts(&s, "t.yml: tables.ev.splits[0]: expected a string");

    // Three shards: ascending, strictly.
    let three = "
hosts: {h: {address: 127.0.0.1}}
sites:
  - {name: a, host: h, shard: 0, replica: 0, peer_port: 9000, client_port: 9010}
  - {name: b, host: h, shard: 1, replica: 0, peer_port: 9001, client_port: 9011}
  - {name: c, host: h, shard: 2, replica: 0, peer_port: 9002, client_port: 9012}
tables:
";
    let s = err(&[(
        "t.yml",
        &format!("{three}  ev: {{partition: range, splits: [p, g]}}"),
    )]);
    assert_eq!(
        s,
        "t.yml: tables.ev.splits[1]: split points must be strictly ascending: \"g\" does not follow \"p\""
    );
    let s = err(&[(
        "t.yml",
        &format!("{three}  ev: {{partition: range, splits: [g, g]}}"),
    )]);
    assert_starts(
        &s,
        "t.yml: tables.ev.splits[1]: split points must be strictly ascending",
    );
    let c = ok(&[(
        "t.yml",
        &format!("{three}  ev: {{partition: range, splits: [g, p]}}"),
    )]);
    assert_eq!(c.shard_of("ev", b"f"), Some(0));
    assert_eq!(c.shard_of("ev", b"g"), Some(1));
    assert_eq!(c.shard_of("ev", b"p"), Some(2));
    // The default table may be listed with its own partitioning.
    let c = ok(&[(
        "t.yml",
        &format!("{three}  kv: {{partition: range, splits: [g, p]}}"),
    )]);
    assert_eq!(c.shard_of(DEFAULT_TABLE, b"h"), Some(1));
    let s = err(&[("t.yml", &format!("{three}  \"a b\": {{}}"))]);
    assert_starts(&s, "t.yml: tables.a b: invalid table name");
}

#[test]
fn secrets_inline_or_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("cluster");
    std::fs::write(&f, "s3cret\n").expect("write");
    let yaml = format!(
        "security: {{cluster_secret_file: {}, client_token: tok}}",
        f.display()
    );
    let c = ok(&[("t.yml", TOPO), ("s.yml", &yaml)]);
    assert_eq!(
        c.security.cluster_secret.as_ref().map(Secret::expose),
        Some(&b"s3cret"[..])
    );
    assert_eq!(
        c.security.client_token.as_ref().map(Secret::expose),
        Some(&b"tok"[..])
    );
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not show secrets"
    );

    let missing = dir.path().join("nope");
    let yaml = format!("security: {{client_token_file: {}}}", missing.display());
    let s = err(&[("t.yml", TOPO), ("s.yml", &yaml)]);
    assert_starts(
        &s,
        &format!(
            "s.yml: security.client_token_file: cannot read {}: ",
            missing.display()
        ),
    );

    let s = err(&[
        ("t.yml", TOPO),
        (
            "s.yml",
            &format!(
                "security: {{cluster_secret: x, cluster_secret_file: {}}}",
                f.display()
            ),
        ),
    ]);
    assert_eq!(
        s,
        "s.yml: security.cluster_secret_file: give cluster_secret or cluster_secret_file, not both"
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let s = err(&[
        ("t.yml", TOPO),
        (
            "s.yml",
            &format!("security: {{cluster_secret_file: {}}}", empty.display()),
        ),
    ]);
    assert_eq!(
        s,
        "s.yml: security.cluster_secret_file: the secret is empty"
    );
    let s = err(&[("t.yml", TOPO), ("s.yml", "security: {client_token: \"\"}")]);
    assert_eq!(s, "s.yml: security.client_token: the secret is empty");
}

#[test]
fn tls_files_must_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in ["c.pem", "k.pem", "ca.pem"] {
        std::fs::write(dir.path().join(n), "pem").expect("write");
    }
    let d = dir.path().display();
    let yaml = format!("security: {{tls: {{cert: {d}/c.pem, key: {d}/k.pem, ca: {d}/ca.pem}}}}");
    let c = ok(&[("t.yml", TOPO), ("s.yml", &yaml)]);
    assert_eq!(
        c.security.tls.as_ref().map(|t| t.key.clone()),
        Some(dir.path().join("k.pem"))
    );

    let yaml =
        format!("security: {{tls: {{cert: {d}/c.pem, key: {d}/missing.pem, ca: {d}/ca.pem}}}}");
    let s = err(&[("t.yml", TOPO), ("s.yml", &yaml)]);
    assert_starts(
        &s,
        &format!("s.yml: security.tls.key: cannot read {d}/missing.pem: "),
    );
    let yaml = format!("security: {{tls: {{cert: {d}/c.pem, key: {d}/k.pem, ca: {d}}}}}");
    let s = err(&[("t.yml", TOPO), ("s.yml", &yaml)]);
    assert_eq!(s, format!("s.yml: security.tls.ca: {d} is not a file"));
}

// ---- the shipped files -------------------------------------------------------------------

fn repo_config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

const TOPOLOGIES: [(&str, u32, u32); 4] = [
    ("1c1s1r.yml", 1, 1),
    ("1c1s3r.yml", 1, 3),
    ("2c2s3r.yml", 2, 3),
    ("failover.yml", 2, 3),
];

#[test]
fn every_shipped_topology_loads_with_each_protocol_file() {
    for (proto, replication) in [
        ("mako_raft.yml", Replication::Raft),
        ("mako_paxos.yml", Replication::Paxos),
    ] {
        for (topo, shards, replicas) in TOPOLOGIES {
            let c = Config::load(&[repo_config(proto), repo_config(topo)])
                .unwrap_or_else(|e| panic!("{proto} + {topo}: {e}"));
            assert_eq!((c.shards(), c.replicas()), (shards, replicas), "{topo}");
            assert_eq!(c.replication, replication);
            assert_eq!(c.durability, Durability::Fsync);
            assert_eq!(c.sites.len() as u32, shards * replicas);
            assert!(
                c.data_dir.ends_with(topo.trim_end_matches(".yml")),
                "{topo}: {:?}",
                c.data_dir
            );
            for shard in 0..shards {
                assert!(c.preferred_leader(shard).is_some(), "{topo}: shard {shard}");
            }
            assert_eq!(c.meta_members().len() % 2, 1, "{topo}");
            assert!(c.table(DEFAULT_TABLE).is_some());
            // Node ids are 1..=S*R, each once.
            let mut ids: Vec<u64> = c.sites.iter().map(|s| c.node_id(s)).collect();
            ids.sort_unstable();
            assert_eq!(ids, (1..=u64::from(shards * replicas)).collect::<Vec<_>>());
        }
    }
}

#[test]
fn the_protocol_files_set_the_documented_values() {
    let c =
        Config::load(&[repo_config("mako_raft.yml"), repo_config("1c1s1r.yml")]).expect("loads");
    assert_eq!(
        c.raft,
        RaftSpec {
            heartbeat_ms: 50,
            election_ms: (400, 700)
        }
    );
    assert_eq!(c.workers, 2);
    let f =
        Config::load(&[repo_config("mako_raft.yml"), repo_config("failover.yml")]).expect("loads");
    assert_eq!(
        f.raft.election_ms,
        (300, 500),
        "failover.yml overrides the election timeout"
    );
    assert_eq!(f.durability, Durability::Fsync);
}

#[test]
fn shipped_topologies_use_disjoint_ports() {
    let mut seen: Vec<(u16, &str)> = Vec::new();
    for (topo, _, _) in TOPOLOGIES {
        let c = Config::load(&[repo_config("mako_raft.yml"), repo_config(topo)]).expect("loads");
        for s in &c.sites {
            for p in [
                Some(s.peer_port),
                Some(s.client_port),
                s.metrics_port,
                s.redis_port,
            ]
            .into_iter()
            .flatten()
            {
                if let Some((_, other)) = seen.iter().find(|(q, _)| *q == p) {
                    panic!("port {p} is used by {topo} and {other}");
                }
                seen.push((p, topo));
            }
        }
    }
}

#[test]
fn a_topology_alone_loads_with_defaults() {
    for (topo, _, _) in TOPOLOGIES {
        Config::load(&[repo_config(topo)]).unwrap_or_else(|e| panic!("{topo}: {e}"));
    }
}
