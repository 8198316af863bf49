//! Remote scans in multi-shard transactions: results, own buffered writes, and validation.

use std::ops::Bound::{Included, Unbounded};
use std::time::Duration;

use bytes::Bytes;
use mako_server::{Cluster, ClusterConfig, SiteConfig};

fn cluster() -> Cluster {
    Cluster::start(ClusterConfig {
        replicas: 1,
        site: SiteConfig {
            shards: 2,
            workers: 2,
            tables: vec!["t".into()],
            timeout: Duration::from_secs(5),
            ..SiteConfig::default()
        },
        election_ms: (150, 300),
        ..ClusterConfig::default()
    })
    .expect("cluster")
}

#[test]
fn remote_scan_sees_rows_and_own_writes_and_is_validated() {
    let c = cluster();
    let mut load = c.leader(1).begin(0).expect("configured worker");
    for k in [b"a", b"b", b"c", b"d"] {
        load.put(1, 0, k, Bytes::from_static(b"v")).expect("put");
    }
    load.commit().expect("load");

    let mut tx = c.leader(0).begin(0).expect("configured worker");
    let rows = tx.scan(1, 0, (Unbounded, Unbounded), 10).expect("scan");
    assert_eq!(rows.len(), 4);
    assert!(tx.is_distributed());
    // Own buffered writes overlay the participant's rows.
    tx.write(1, 0, b"b", None).expect("delete");
    tx.put(1, 0, b"bb", Bytes::from_static(b"w")).expect("put");
    let keys: Vec<Vec<u8>> = tx
        .scan(1, 0, (Included(&b"a"[..]), Included(&b"c"[..])), 2)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"bb".to_vec()]);
    let rev: Vec<Vec<u8>> = tx
        .rscan(1, 0, (Unbounded, Unbounded), 2)
        .expect("rscan")
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    assert_eq!(rev, vec![b"d".to_vec(), b"c".to_vec()]);
    tx.commit().expect("the scanning transaction commits");
    assert_eq!(c.leader(1).store().tables()[0].get(b"b"), None);

    // A concurrent insert into the scanned range makes a scanning transaction fail validation.
    let mut scanner = c.leader(0).begin(1).expect("configured worker");
    let seen = scanner
        .scan(1, 0, (Unbounded, Unbounded), 100)
        .expect("scan");
    scanner
        .put(0, 0, b"x", Bytes::from(seen.len().to_string()))
        .expect("put");
    let mut other = c.leader(1).begin(1).expect("configured worker");
    other
        .put(1, 0, b"e", Bytes::from_static(b"v"))
        .expect("put");
    other.commit().expect("insert");
    assert!(scanner.commit().is_err(), "phantom not detected");
}
