//! `dlog bookie` configuration: defaults, flags over the file, and every refusal naming its
//! setting (src/bookie/config.rs, invariants C1 to C4).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use dlog::bookie::config::{BackendChoice, DirectIoChoice};
use dlog::bookie::{BookieArgs, ConfigError, Origin, ServerConfig, ServerLimits, check_config};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: BookieArgs,
}

fn parse(argv: &[&str]) -> BookieArgs {
    Cli::try_parse_from(std::iter::once("dlog-bookie").chain(argv.iter().copied())).expect("flags parse").args
}

fn with_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bookie.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn resolve_file(text: &str, flags: &[&str]) -> Result<ServerConfig, ConfigError> {
    let (_dir, path) = with_file(text);
    let mut argv = vec!["--config", path.to_str().unwrap()];
    argv.extend_from_slice(flags);
    ServerConfig::resolve(parse(&argv))
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bookie.example.toml")
}

/// The error must name `field`, say `needle`, and display both.
fn assert_refused(result: Result<ServerConfig, ConfigError>, field: &str, needle: &str) -> ConfigError {
    let err = result.expect_err("must be refused");
    let shown = err.to_string();
    assert_eq!(err.field(), Some(field), "{shown}");
    assert!(shown.contains(needle), "{shown:?} should contain {needle:?}");
    err
}

#[test]
fn defaults() {
    let config = ServerConfig::resolve(parse(&["--journal-dir", "/data/dlog/journal"])).unwrap();
    assert_eq!(config.listen, "127.0.0.1:3181".parse::<SocketAddr>().unwrap());
    assert_eq!(config.journal_dirs, [PathBuf::from("/data/dlog/journal")]);
    assert_eq!(config.ledger_dirs, config.journal_dirs, "ledgers default to the journal dirs");
    assert_eq!(config.metadata, "local:///data/dlog/metadata");
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(config.shards, cpus.min(1024));
    assert_eq!(config.bookie_id, "127.0.0.1:3181");
    assert_eq!(config.metrics_listen, None);
    assert_eq!(config.limits, ServerLimits::default());
    assert_eq!(config.limits.in_flight_max, 1024);
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.limits.protocol(), dlog_protocol::Limits::default());
    assert_eq!(config.engine.backend, BackendChoice::Auto);

    let engine = config.engine_config();
    let defaults = dlog_engine::BookieConfig::new("/data/dlog/journal");
    assert_eq!(engine.journal_dirs, config.journal_dirs);
    assert_eq!(engine.storage_dir(0), Path::new("/data/dlog/journal"));
    assert_eq!(engine.shard_count, config.shards);
    assert_eq!(engine.entry_bytes_max, defaults.entry_bytes_max);
    assert_eq!(engine.write_cache_bytes_max, defaults.write_cache_bytes_max);
    assert_eq!(engine.backend, dlog_engine::Backend::Auto);
    engine.validate().unwrap();
}

#[test]
fn flags_override_the_file() {
    let file = r#"
listen = "127.0.0.1:4000"
journal_dirs = ["/file/j"]
ledger_dirs = ["/file/l"]
metadata = "memory://"
shards = 3
bookie_id = "from-file"
metrics_listen = "127.0.0.1:9000"
[engine]
backend = "io-uring"
"#;
    let only_file = resolve_file(file, &[]).unwrap();
    assert_eq!(only_file.listen.port(), 4000);
    assert_eq!(only_file.journal_dirs, [PathBuf::from("/file/j")]);
    assert_eq!(only_file.ledger_dirs, [PathBuf::from("/file/l")]);
    assert_eq!((only_file.shards, only_file.bookie_id.as_str()), (3, "from-file"));
    assert_eq!(only_file.engine.backend, BackendChoice::IoUring);
    assert_eq!(only_file.engine_config().storage_dirs, [PathBuf::from("/file/l")]);

    let flags = [
        "--listen",
        "127.0.0.1:5000",
        "--journal-dir",
        "/flag/j",
        "--ledger-dir",
        "/flag/l",
        "--metadata",
        "local:///flag/meta",
        "--shards",
        "2",
        "--bookie-id",
        "from-flag",
        "--metrics-listen",
        "127.0.0.1:9001",
        "--backend",
        "portable",
    ];
    let config = resolve_file(file, &flags).unwrap();
    assert_eq!(config.listen.port(), 5000);
    assert_eq!(config.journal_dirs, [PathBuf::from("/flag/j")], "a list flag replaces the file's list");
    assert_eq!(config.ledger_dirs, [PathBuf::from("/flag/l")]);
    assert_eq!(config.metadata, "local:///flag/meta");
    assert_eq!((config.shards, config.bookie_id.as_str()), (2, "from-flag"));
    assert_eq!(config.metrics_listen, Some("127.0.0.1:9001".parse().unwrap()));
    assert_eq!(config.engine.backend, BackendChoice::Portable);

    // A flag for one setting leaves the file's others alone.
    let partial = resolve_file(file, &["--shards", "1"]).unwrap();
    assert_eq!((partial.shards, partial.listen.port(), partial.bookie_id.as_str()), (1, 4000, "from-file"));
}

#[test]
fn journal_dirs_repeat() {
    let args = parse(&["--journal-dir", "/a", "--journal-dir", "/b", "--journal-dir", "/c", "--shards", "4"]);
    let config = ServerConfig::resolve(args).unwrap();
    assert_eq!(config.journal_dirs, ["/a", "/b", "/c"].map(PathBuf::from));
    assert_eq!(config.metadata, "local:///metadata", "beside the first journal dir");
    let engine = config.engine_config();
    assert_eq!(engine.journal_dirs.len(), 3);
    assert_eq!(engine.storage_dir(3), Path::new("/a"), "shard n uses dir n % count");
}

#[test]
fn bad_listen_address_names_the_flag_and_the_file_line() {
    let err = assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--listen", "localhost"])),
        "listen",
        "--listen",
    );
    assert!(err.to_string().contains("\"localhost\" is not a socket address"), "{err}");
    let err = assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\n\nlisten = \"1.2.3.4\"\n", &[]),
        "listen",
        ":3: listen",
    );
    assert!(matches!(err, ConfigError::Invalid { at: Origin::File { line: 3, .. }, .. }), "{err:?}");
    assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--metrics-listen", "x:y"])),
        "metrics_listen",
        "--metrics-listen",
    );
    assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--metrics-listen", "127.0.0.1:3181"])),
        "metrics_listen",
        "the bookie's listen address",
    );
}

#[test]
fn zero_and_too_many_shards_are_refused() {
    assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--shards", "0"])),
        "shards",
        "--shards",
    );
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\nshards = 0\n", &[]),
        "shards",
        ":2: shards: 0 is not in",
    );
    assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--shards", "1025"])),
        "shards",
        "1..=1024",
    );
}

#[test]
fn journal_dirs_must_be_given_and_not_empty() {
    let err = ServerConfig::resolve(BookieArgs::default()).unwrap_err();
    assert!(matches!(err, ConfigError::NoJournalDir), "{err:?}");
    assert_eq!(err.field(), Some("journal_dirs"));
    assert!(err.to_string().contains("--journal-dir"), "{err}");
    assert_refused(
        resolve_file("journal_dirs = []\n", &[]),
        "journal_dirs",
        ":1: journal_dirs: the list is empty",
    );
    assert_refused(
        resolve_file("journal_dirs = [\"/j\", \"\"]\n", &[]),
        "journal_dirs",
        "entry 1 is an empty path",
    );
    assert_refused(resolve_file("journal_dirs = [\"/j\"]\nledger_dirs = []\n", &[]), "ledger_dirs", ":2:");
}

#[test]
fn bad_bookie_ids_are_refused() {
    let err = assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--bookie-id", "rack/bookie"])),
        "bookie_id",
        "--bookie-id",
    );
    assert!(err.to_string().contains("rack/bookie"), "{err}");
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\nbookie_id = \"\"\n", &[]),
        "bookie_id",
        ":2: bookie_id",
    );
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\nbookie_id = \"..\"\n", &[]),
        "bookie_id",
        ":2: bookie_id",
    );
    // No usable default id from an unspecified address: the error says what to give.
    assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--listen", "0.0.0.0:3181"])),
        "bookie_id",
        "give --bookie-id",
    );
    let ok = ServerConfig::resolve(parse(&[
        "--journal-dir",
        "/j",
        "--listen",
        "0.0.0.0:3181",
        "--bookie-id",
        "b1",
    ]));
    assert_eq!(ok.unwrap().bookie_id, "b1");
}

#[test]
fn bad_metadata_uris_are_refused() {
    let err = assert_refused(
        ServerConfig::resolve(parse(&["--journal-dir", "/j", "--metadata", "zk://h:2181/dlog"])),
        "metadata",
        "--metadata",
    );
    assert!(err.to_string().contains("expected local:///path, memory://, etcd://"), "{err}");
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\nmetadata = \"local://\"\n", &[]),
        "metadata",
        ":2:",
    );
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\nmetadata = \"etcd://h:1/a/b\"\n", &[]),
        "metadata",
        "scope",
    );
    for good in ["memory://", "local://rel/meta", "etcd://h:2379/dlog"] {
        let config = ServerConfig::resolve(parse(&["--journal-dir", "/j", "--metadata", good])).unwrap();
        assert_eq!(config.metadata, good);
    }
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    for (text, line) in [
        ("journal_dirs = [\"/j\"]\nlisten_addr = \"127.0.0.1:1\"\n", 2),
        ("journal_dirs = [\"/j\"]\n[limits]\nin_flight = 3\n", 3),
        ("journal_dirs = [\"/j\"]\n[engine]\nbackend = \"auto\"\nbakend = \"auto\"\n", 4),
        ("journal_dirs = [\"/j\"]\n[journal]\nx = 1\n", 2),
    ] {
        let err = resolve_file(text, &[]).unwrap_err();
        let shown = err.to_string();
        match &err {
            ConfigError::Syntax { line: got, message, .. } => {
                assert_eq!(*got, line, "{shown}");
                assert!(message.contains("unknown field"), "{shown}");
            }
            other => panic!("{other:?}"),
        }
        assert!(shown.contains(&format!("bookie.toml:{line}:")), "{shown}");
    }
}

#[test]
fn syntax_and_type_errors_give_the_line() {
    for (text, line, needle) in [
        ("journal_dirs = [\"/j\"]\nshards = \n", 2, "shards"),
        ("journal_dirs = [\"/j\"]\n\n\nlisten = \"unterminated\n", 4, "listen"),
        ("journal_dirs = [\"/j\"]\nshards = \"four\"\n", 2, "shards"),
        ("journal_dirs = [\"/j\"]\nshards = -1\n", 2, "shards"),
        ("journal_dirs = [\"/j\"]\n[engine]\nbackend = \"spdk\"\n", 3, "backend"),
        ("journal_dirs = \"/j\"\n", 1, "journal_dirs"),
    ] {
        let err = resolve_file(text, &[]).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { line: l, .. } if l == line), "{text:?}: {shown}");
        assert!(shown.contains(needle), "{shown:?} should quote the line with {needle:?}");
    }
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let args = parse(&["--config", "/nonexistent/dlog/bookie.toml", "--journal-dir", "/j"]);
    let err = ServerConfig::resolve(args).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(err.to_string().contains("/nonexistent/dlog/bookie.toml"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = ServerConfig::resolve(parse(&["--config", dir.path().to_str().unwrap()])).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "a directory is not a file: {err:?}");
}

#[test]
fn limits_and_engine_knobs_are_checked() {
    let base = "journal_dirs = [\"/j\"]\n";
    let cases = [
        ("[limits]\nin_flight_max = 0\n", "limits.in_flight_max"),
        ("[limits]\nidle_timeout_s = 0\n", "limits.idle_timeout_s"),
        ("[limits]\nframe_bytes_max = 1024\n", "limits.frame_bytes_max"),
        ("[limits]\nentry_bytes_max = 0\n", "limits.entry_bytes_max"),
        ("[limits]\nrange_bytes_max = 0\n", "limits.range_bytes_max"),
        ("[engine]\ndisk_free_bytes_min = 10\ndisk_free_bytes_resume = 5\n", "engine.disk_free_bytes_resume"),
    ];
    for (table, field) in cases {
        let err = resolve_file(&format!("{base}{table}"), &[]).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(matches!(err, ConfigError::Invalid { at: Origin::File { line: 3.., .. }, .. }), "{err:?}");
    }
    // Entries larger than the default frame holds: the frame limit is named, as a default.
    let err = resolve_file(&format!("{base}[limits]\nentry_bytes_max = 16777216\n"), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { at: Origin::Default, .. }), "{err:?}");
    assert!(err.to_string().starts_with("limits.frame_bytes_max (default): "), "{err}");
    // A combination only the engine checks: a write cache under 4 x the entry size.
    let text =
        format!("{base}[limits]\nentry_bytes_max = 2097152\n[engine]\nwrite_cache_bytes_max = 4194304\n");
    let err = resolve_file(&text, &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Engine(_)), "{err:?}");
    assert!(err.to_string().contains("write_cache_bytes_max"), "{err}");
    // The journal file size goes to the engine, which checks it.
    let config = resolve_file(&format!("{base}[engine]\njournal_file_bytes = 33554432\n"), &[]).unwrap();
    assert_eq!(config.engine_config().journal_file_bytes, 32 << 20);
    for bad in [33554433u64, 4096, 1 << 41] {
        let err = resolve_file(&format!("{base}[engine]\njournal_file_bytes = {bad}\n"), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Engine(_)), "{err:?}");
        assert!(err.to_string().contains("journal_file_bytes"), "{err}");
    }
}

#[test]
fn the_example_file_resolves_and_round_trips() {
    let path = example_path();
    let config = ServerConfig::resolve(parse(&["--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(config.listen, "10.0.0.7:3181".parse::<SocketAddr>().unwrap());
    assert_eq!(
        config.journal_dirs,
        ["/var/lib/dlog/journal-0", "/var/lib/dlog/journal-1"].map(PathBuf::from)
    );
    assert_eq!(config.ledger_dirs, [PathBuf::from("/var/lib/dlog/ledgers")]);
    assert_eq!(config.metadata, "etcd://10.0.0.1:2379,10.0.0.2:2379/dlog-prod");
    assert_eq!((config.shards, config.bookie_id.as_str()), (4, "bookie-7.dc1:3181"));
    assert_eq!(config.metrics_listen, Some("10.0.0.7:9181".parse().unwrap()));
    assert_eq!(config.limits, ServerLimits::default(), "the example spells out the defaults");
    assert_eq!(config.engine.direct_io, DirectIoChoice::Optional);

    // Rendered and read back: the same configuration.
    let rendered = config.to_toml();
    let again = resolve_file(&rendered, &[]).unwrap();
    assert_eq!(again, config, "{rendered}");

    // Every key of the example is one the schema knows, and the rendering sets them all.
    let keys = |text: &str| -> Vec<String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let mut keys = Vec::new();
        for (key, value) in &table {
            match value.as_table() {
                Some(inner) => keys.extend(inner.keys().map(|k| format!("{key}.{k}"))),
                None => keys.push(key.clone()),
            }
        }
        keys.sort();
        keys
    };
    assert_eq!(keys(&rendered), keys(&std::fs::read_to_string(&path).unwrap()));
}

#[test]
fn check_config_renders_the_effective_configuration() {
    let rendered =
        check_config(parse(&["--journal-dir", "/j", "--metadata", "memory://", "--shards", "2"])).unwrap();
    assert!(rendered.contains("shards = 2"), "{rendered}");
    assert!(rendered.contains("[limits]") && rendered.contains("[engine]"), "{rendered}");
    let etcd = check_config(parse(&["--journal-dir", "/j", "--metadata", "etcd://h:2379/dlog"]));
    if cfg!(feature = "etcd") {
        etcd.unwrap();
    } else {
        assert!(etcd.unwrap_err().to_string().contains("--features etcd"));
    }
    assert!(matches!(check_config(BookieArgs::default()), Err(ConfigError::NoJournalDir)));
}

#[test]
fn placement_labels_come_from_flags_or_the_file_and_are_checked() {
    let config =
        resolve_file("journal_dirs = [\"/j\"]\n[registration]\nzone = \"z1\"\n", &["--rack", "r-2"]).unwrap();
    assert_eq!((config.zone.as_str(), config.rack.as_str()), ("z1", "r-2"));
    let config = resolve_file("journal_dirs = [\"/j\"]\n", &["--zone", "eu-1a"]).unwrap();
    assert_eq!((config.zone.as_str(), config.rack.as_str()), ("eu-1a", ""));
    assert_refused(resolve_file("journal_dirs = [\"/j\"]\n", &["--zone", "a/b"]), "registration.zone", "");
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\n[registration]\nrack = \"r 1\"\n", &[]),
        "registration.rack",
        "",
    );
}

#[test]
fn autorecovery_is_on_by_default_and_can_be_turned_off() {
    let config = resolve_file("journal_dirs = [\"/j\"]\n", &[]).unwrap();
    let on = config.autorecovery.expect("on by default");
    assert_eq!(on.lost_bookie_grace, std::time::Duration::from_secs(30));
    let config =
        resolve_file("journal_dirs = [\"/j\"]\n[autorecovery]\nlost_bookie_grace_ms = 500\n", &[]).unwrap();
    assert_eq!(config.autorecovery.unwrap().lost_bookie_grace, std::time::Duration::from_millis(500));
    let off = resolve_file("journal_dirs = [\"/j\"]\n", &["--autorecovery", "false"]).unwrap();
    assert_eq!(off.autorecovery, None);
    assert_refused(
        resolve_file("journal_dirs = [\"/j\"]\n[autorecovery]\nopen_segment_grace_ms = 0\n", &[]),
        "autorecovery.open_segment_grace_ms",
        "0 is not in",
    );
}
