//! Unit tests of config.rs's private helpers: file positions, metadata URIs, the defaults
//! derived from the listen address and the journal directory.

use super::*;

#[test]
fn positions_are_one_based_and_clamped() {
    let source = Source { path: Path::new("f.toml"), text: "a = 1\nbé = 2\n" };
    assert_eq!(source.position(0), (1, 1));
    assert_eq!(source.position(6), (2, 1));
    assert_eq!(source.position(9), (2, 3), "columns count characters");
    assert_eq!(source.position(8), (2, 2), "a byte inside a character backs up to its start");
    assert_eq!(source.position(1000), (3, 1));
}

#[test]
fn metadata_uris_follow_any_store() {
    for good in ["local:///var/lib/dlog/metadata", "local://rel", "memory://", "etcd://h:1,k:2/scope"] {
        assert_eq!(check_metadata_uri(good), Ok(()), "{good}");
    }
    for bad in ["", "local://", "memory://x", "zk://h:1/a", "etcd://h:1", "etcd://h/x", "etcd://h:1/a/b"] {
        assert!(check_metadata_uri(bad).is_err(), "{bad}");
    }
}

#[test]
fn default_metadata_sits_beside_the_journal() {
    assert_eq!(default_metadata(Path::new("/var/lib/dlog/journal")), "local:///var/lib/dlog/metadata");
    assert_eq!(default_metadata(Path::new("journal")), "local://./metadata");
}

#[test]
fn default_bookie_id_needs_a_concrete_ipv4_address() {
    assert_eq!(default_bookie_id("10.0.0.7:3181".parse().unwrap()).unwrap(), "10.0.0.7:3181");
    for addr in ["0.0.0.0:3181", "127.0.0.1:0", "[::1]:3181"] {
        let err = default_bookie_id(addr.parse().unwrap()).unwrap_err();
        assert!(err.contains("--bookie-id"), "{addr}: {err}");
    }
}
