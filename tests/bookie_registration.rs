//! A bookie's identity and registration (src/bookie/{cookie_file,registration}.rs): cookie
//! files created at first start and checked at every later one (a missing, corrupt or foreign
//! cookie is refused, naming the directory or file), registration that follows the read-only
//! signal, comes back after a lost lease, waits out a crashed predecessor's registration and
//! vanishes at deregistration. Each case runs on the embedded store (`memory://` and
//! `local://DIR`) and, with the `etcd` feature, on a real etcd (never skipped without one).

use std::any::Any;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dlog::bookie::cookie_file::{self, COOKIE_FILE, COOKIE_PENDING};
use dlog::bookie::registration::{
    Registration, RegistrationConfig, RegistrationError, RegistrationState, STALE_WAIT_TTLS,
};
use dlog_metadata::schema::{self, Cookie};
use dlog_metadata::{AnyStore, BookieRegistry, Cluster, MetaError, MetadataStore, RegisteredBookie};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest any awaited change may take.
const WAIT_MAX: Duration = Duration::from_secs(15);
const ID: &str = "bookie-1";

/// A store under test, what keeps it alive, and a directory for the bookie's disks.
struct Backend {
    store: Arc<AnyStore>,
    /// A lease ttl the backend honours (etcd: whole seconds, at least 2).
    ttl: Duration,
    disks: tempfile::TempDir,
    _guard: Box<dyn Any + Send>,
}

impl Backend {
    fn journal_dirs(&self) -> Vec<PathBuf> {
        vec![self.disks.path().join("j0"), self.disks.path().join("j1")]
    }

    /// One ledger dir of its own, and the first journal dir again (as the default config
    /// does): a directory listed twice holds one cookie file.
    fn ledger_dirs(&self) -> Vec<PathBuf> {
        vec![self.disks.path().join("l0"), self.disks.path().join("j0")]
    }

    fn all_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.journal_dirs();
        dirs.push(self.disks.path().join("l0"));
        dirs
    }

    fn config(&self) -> RegistrationConfig {
        RegistrationConfig {
            lease_ttl: self.ttl,
            ..RegistrationConfig::new(ID, "127.0.0.1:3181", self.journal_dirs(), self.ledger_dirs())
        }
    }

    fn registry(&self) -> BookieRegistry<AnyStore> {
        BookieRegistry::new(self.store.clone())
    }

    async fn start(&self) -> Result<Registration<AnyStore>, RegistrationError> {
        Registration::start(self.store.clone(), self.config()).await
    }

    async fn registered(&self) -> Option<RegisteredBookie> {
        self.registry().bookie(ID).await.unwrap()
    }
}

async fn memory() -> Backend {
    let store = Arc::new(AnyStore::open("memory://").await.unwrap());
    Backend { store, ttl: Duration::from_secs(1), disks: tempfile::tempdir().unwrap(), _guard: Box::new(()) }
}

async fn local() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AnyStore::open(&format!("local://{}", dir.path().display())).await.unwrap());
    Backend { store, ttl: Duration::from_secs(1), disks: tempfile::tempdir().unwrap(), _guard: Box::new(dir) }
}

#[cfg(feature = "etcd")]
async fn etcd() -> Backend {
    let server = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(AnyStore::open(&server.uri("registration")).await.unwrap());
    Backend {
        store,
        ttl: Duration::from_secs(2),
        disks: tempfile::tempdir().unwrap(),
        _guard: Box::new(server),
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `WAIT_MAX`.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT_MAX;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {WAIT_MAX:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `run` in a task, with its read-only signal and its shutdown.
struct Running {
    read_only: watch::Sender<bool>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    states: watch::Receiver<RegistrationState>,
    task: tokio::task::JoinHandle<(Registration<AnyStore>, Result<(), RegistrationError>)>,
}

fn spawn_run(mut registration: Registration<AnyStore>) -> Running {
    let (read_only, signal) = watch::channel(registration.config().read_only);
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let states = registration.subscribe();
    let task = tokio::spawn(async move {
        let result = registration
            .run(signal, async move {
                let _ = stop.await;
            })
            .await;
        (registration, result)
    });
    Running { read_only, shutdown, states, task }
}

impl Running {
    async fn wait_state(&mut self, want: RegistrationState) {
        let seen = tokio::time::timeout(WAIT_MAX, self.states.wait_for(|s| *s == want))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(seen, "state {want:?} not within {WAIT_MAX:?}: {:?}", *self.states.borrow());
    }

    async fn stop(self) -> Registration<AnyStore> {
        let _ = self.shutdown.send(());
        let (registration, result) =
            tokio::time::timeout(WAIT_MAX, self.task).await.expect("run stops at shutdown").unwrap();
        result.unwrap();
        registration
    }
}

mod cases {
    use super::*;

    pub(super) async fn first_start_creates_cookies_and_a_restart_passes(b: Backend) {
        let registration = b.start().await.unwrap();
        assert_eq!(registration.state(), RegistrationState::Writable);
        let (stored, _) = b.registry().cookie(ID).await.unwrap().expect("cookies/<id> created");
        assert_eq!(&stored, registration.cookie());
        let instance = Cluster::new(b.store.clone()).get().await.unwrap().unwrap().instance_id;
        assert_eq!(stored.instance_id, instance);
        assert_eq!(stored.journal_dirs.len(), 2);
        assert_eq!(stored.ledger_dirs.len(), 2);
        for dir in b.all_dirs() {
            assert_eq!(cookie_file::read(&dir).unwrap().as_ref(), Some(&stored), "{}", dir.display());
            assert!(!dir.join(COOKIE_PENDING).exists(), "{}", dir.display());
        }
        let held = b.registered().await.expect("registered");
        assert!(!held.read_only);
        assert_eq!(held.info.endpoint, "127.0.0.1:3181");
        assert_eq!(held.lease, registration.lease());
        registration.deregister().await.unwrap();
        assert_eq!(b.registered().await, None);

        // A restart with the same directories: same cookie, registered again.
        let registration = b.start().await.unwrap();
        assert_eq!(registration.cookie(), &stored);
        assert!(b.registered().await.is_some());
        registration.deregister().await.unwrap();
    }

    pub(super) async fn a_directory_without_its_cookie_is_refused(b: Backend) {
        b.start().await.unwrap().deregister().await.unwrap();
        let wiped = b.disks.path().join("l0");
        std::fs::remove_file(wiped.join(COOKIE_FILE)).unwrap();
        match b.start().await {
            Err(RegistrationError::MissingCookie { dir }) => assert_eq!(dir, wiped),
            other => panic!("{other:?}"),
        }
        let message = RegistrationError::MissingCookie { dir: wiped.clone() }.to_string();
        assert!(message.contains("wiped") && message.contains("re-replicated"), "{message}");
        assert_eq!(b.registered().await, None, "nothing registered (RG1)");
        // Every disk emptied: the id is reused on empty disks.
        for dir in b.all_dirs() {
            let _ = std::fs::remove_file(dir.join(COOKIE_FILE));
        }
        match b.start().await {
            Err(RegistrationError::NoCookieOnDisks { key, dirs }) => {
                assert_eq!(key, schema::cookie_key(ID));
                assert_eq!(dirs.len(), 3, "each directory once: {dirs:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    pub(super) async fn a_corrupt_cookie_file_is_refused_naming_it(b: Backend) {
        b.start().await.unwrap().deregister().await.unwrap();
        let path = b.disks.path().join("j1").join(COOKIE_FILE);
        std::fs::write(&path, b"{\"format\": \"dlog-cookie\", \"version\": 1, \"bookie_id\": ").unwrap();
        match b.start().await {
            Err(RegistrationError::CorruptCookieFile { path: named, why }) => {
                assert_eq!(named, path, "{why}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, b"some other program's file").unwrap();
        match b.start().await {
            Err(RegistrationError::CorruptCookieFile { path: named, why }) => {
                assert_eq!(named, path);
                assert!(why.contains("not a dlog cookie file"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, b"some other program's file", "never overwritten");
        assert_eq!(b.registered().await, None);
    }

    pub(super) async fn a_foreign_cookie_is_refused_with_the_differences(b: Backend) {
        let registration = b.start().await.unwrap();
        let stored = registration.cookie().clone();
        registration.deregister().await.unwrap();
        // j1 now holds a disk formatted for another cluster.
        let j1 = b.disks.path().join("j1");
        std::fs::remove_file(j1.join(COOKIE_FILE)).unwrap();
        let foreign = Cookie { instance_id: "f".repeat(32), disk_id: "e".repeat(32), ..stored.clone() };
        cookie_file::create(&j1, &foreign).unwrap();
        match b.start().await {
            Err(RegistrationError::CookieMismatch { differences }) => {
                assert_eq!(differences.len(), 2, "{differences:?}");
                let file = j1.join(COOKIE_FILE).display().to_string();
                assert!(differences.iter().all(|d| d.starts_with(&file)), "{differences:?}");
                assert!(differences[0].contains("instance id"), "{differences:?}");
                assert!(differences[1].contains("disk id"), "{differences:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.registered().await, None);
        // A directory added to the configuration without updating the stored cookie.
        std::fs::remove_file(j1.join(COOKIE_FILE)).unwrap();
        cookie_file::create(&j1, &stored).unwrap();
        let mut config = b.config();
        config.ledger_dirs.push(b.disks.path().join("l1"));
        match Registration::start(b.store.clone(), config).await {
            Err(RegistrationError::CookieMismatch { differences }) => {
                assert_eq!(differences.len(), 1, "{differences:?}");
                assert!(differences[0].starts_with("configured ledger dirs"), "{differences:?}");
            }
            other => panic!("{other:?}"),
        }
        b.start().await.unwrap().deregister().await.unwrap();
    }

    pub(super) async fn disks_of_another_store_are_refused(b: Backend) {
        b.start().await.unwrap().deregister().await.unwrap();
        // The same disks, pointed at an empty store.
        let empty = Arc::new(AnyStore::open("memory://").await.unwrap());
        match Registration::start(empty, b.config()).await {
            Err(RegistrationError::NoStoredCookie { key, dir }) => {
                assert_eq!(key, schema::cookie_key(ID));
                assert!(b.all_dirs().contains(&dir), "{}", dir.display());
            }
            other => panic!("{other:?}"),
        }
    }

    pub(super) async fn an_interrupted_first_start_is_finished(b: Backend) {
        // The crash of CF3: pending files written and the cookie stored, no cookie file yet.
        let instance = Cluster::new(b.store.clone()).init().await.unwrap().instance_id;
        let names = |dirs: Vec<PathBuf>| dirs.iter().map(|d| d.display().to_string()).collect();
        let cookie = Cookie {
            bookie_id: ID.into(),
            instance_id: instance,
            journal_dirs: names(b.journal_dirs()),
            ledger_dirs: names(b.ledger_dirs()),
            disk_id: dlog_metadata::cluster::random_id(),
        };
        for dir in b.all_dirs() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(COOKIE_PENDING), cookie_file::encode(&cookie)).unwrap();
        }
        b.registry().create_cookie(&cookie).await.unwrap();
        let registration = b.start().await.unwrap();
        for dir in b.all_dirs() {
            assert_eq!(cookie_file::read(&dir).unwrap().as_ref(), Some(&cookie));
            assert!(!dir.join(COOKIE_PENDING).exists());
        }
        registration.deregister().await.unwrap();
    }

    pub(super) async fn registration_follows_the_read_only_signal(b: Backend) {
        let mut running = spawn_run(b.start().await.unwrap());
        running.wait_state(RegistrationState::Writable).await;
        for read_only in [true, false, true] {
            running.read_only.send(read_only).unwrap();
            let want = if read_only { RegistrationState::ReadOnly } else { RegistrationState::Writable };
            running.wait_state(want).await;
            let held = b.registered().await.expect("registered");
            assert_eq!(held.read_only, read_only);
        }
        let registration = running.stop().await;
        assert_eq!(registration.state(), RegistrationState::ReadOnly);
        assert!(b.registered().await.is_some_and(|h| h.read_only), "shutdown leaves it for deregister");
        let states = registration.subscribe();
        registration.deregister().await.unwrap();
        assert_eq!(*states.borrow(), RegistrationState::Unregistered);
        assert_eq!(b.registered().await, None);

        // Read-only from the start.
        let config = RegistrationConfig { read_only: true, ..b.config() };
        let registration = Registration::start(b.store.clone(), config).await.unwrap();
        assert_eq!(registration.state(), RegistrationState::ReadOnly);
        assert!(b.registered().await.is_some_and(|h| h.read_only));
        registration.deregister().await.unwrap();
    }

    pub(super) async fn a_lost_lease_is_replaced_and_registered_again(b: Backend) {
        let mut running = spawn_run(b.start().await.unwrap());
        running.wait_state(RegistrationState::Writable).await;
        let first = b.registered().await.unwrap().lease.unwrap();
        // The store ends the lease (as at an expiry): the registration goes with it.
        b.store.revoke(first).await.unwrap();
        wait_until("registered again under a new lease", || async {
            b.registered().await.is_some_and(|h| h.lease.is_some_and(|l| l != first))
        })
        .await;
        running.wait_state(RegistrationState::Writable).await;
        let registration = running.stop().await;
        assert_ne!(registration.lease(), Some(first));
        assert_eq!(b.registered().await.unwrap().lease, registration.lease());
        registration.deregister().await.unwrap();
        assert_eq!(b.registered().await, None);
    }

    pub(super) async fn a_restart_after_a_crash_waits_out_the_old_registration(b: Backend) {
        let crashed = b.start().await.unwrap();
        let old = crashed.lease();
        drop(crashed); // no deregister: the lease stays until its ttl runs out
        let restarted = Instant::now();
        let registration = b.start().await.unwrap();
        let took = restarted.elapsed();
        assert!(took >= b.ttl / 3, "it waited for the old lease ({took:?})");
        assert!(took < b.ttl * STALE_WAIT_TTLS + Duration::from_secs(2), "bounded: {took:?}");
        let held = b.registered().await.unwrap();
        assert_eq!(held.lease, registration.lease());
        assert_ne!(held.lease, old);
        registration.deregister().await.unwrap();
    }

    pub(super) async fn a_live_holder_of_the_id_is_not_displaced(b: Backend) {
        let live = b.start().await.unwrap();
        let started = Instant::now();
        match b.start().await {
            Err(RegistrationError::StaleRegistration { key, waited }) => {
                assert_eq!(key, schema::bookie_key(ID, false));
                assert!(waited >= b.ttl * STALE_WAIT_TTLS, "{waited:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < b.ttl * STALE_WAIT_TTLS + Duration::from_secs(5));
        assert_eq!(b.registered().await.unwrap().lease, live.lease(), "never removed (RG3)");
        live.deregister().await.unwrap();
    }

    pub(super) async fn a_decommissioned_bookie_stops_registering(b: Backend) {
        let running = spawn_run(b.start().await.unwrap());
        let lease = b.registered().await.unwrap().lease.unwrap();
        // An operator removes the bookie: its cookie, then its lease.
        b.store.delete(&schema::cookie_key(ID)).await.unwrap();
        b.store.revoke(lease).await.unwrap();
        let (registration, result) =
            tokio::time::timeout(WAIT_MAX, running.task).await.expect("run ends").unwrap();
        match result {
            Err(RegistrationError::Metadata(MetaError::NotFound(key))) => {
                assert_eq!(key, schema::cookie_key(ID))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(registration.state(), RegistrationState::Unregistered);
        assert_eq!(b.registered().await, None);
        registration.deregister().await.unwrap();
    }

    pub(super) async fn bad_configs_are_refused_before_anything_is_written(b: Backend) {
        let bad = [
            RegistrationConfig { bookie_id: "a/b".into(), ..b.config() },
            RegistrationConfig { endpoint: "nohost".into(), ..b.config() },
            RegistrationConfig { endpoint: "0.0.0.0:3181".into(), ..b.config() },
            RegistrationConfig { journal_dirs: vec![], ..b.config() },
            RegistrationConfig { ledger_dirs: vec![PathBuf::new()], ..b.config() },
            RegistrationConfig { lease_ttl: Duration::ZERO, ..b.config() },
        ];
        for config in bad {
            let result = Registration::start(b.store.clone(), config.clone()).await;
            assert!(matches!(result, Err(RegistrationError::InvalidConfig(_))), "{config:?}: {result:?}");
        }
        assert!(!Path::new(&b.disks.path().join("j0")).exists());
        assert_eq!(b.registry().cookie(ID).await.unwrap(), None);
    }
}

macro_rules! suite {
    ($backend:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    cases::$case($make.await).await;
                }
            )*
        }
    };
}

macro_rules! every_case {
    ($backend:ident, $make:expr) => {
        suite!(
            $backend,
            $make,
            [
                first_start_creates_cookies_and_a_restart_passes,
                a_directory_without_its_cookie_is_refused,
                a_corrupt_cookie_file_is_refused_naming_it,
                a_foreign_cookie_is_refused_with_the_differences,
                disks_of_another_store_are_refused,
                an_interrupted_first_start_is_finished,
                registration_follows_the_read_only_signal,
                a_lost_lease_is_replaced_and_registered_again,
                a_restart_after_a_crash_waits_out_the_old_registration,
                a_live_holder_of_the_id_is_not_displaced,
                a_decommissioned_bookie_stops_registering,
                bad_configs_are_refused_before_anything_is_written,
            ]
        );
    };
}

every_case!(memory, memory());
every_case!(local, local());
#[cfg(feature = "etcd")]
every_case!(etcd, etcd());

/// A backend on `server` (2 s leases) whose first incarnation crashed: its registration
/// stays until its lease expires.
#[cfg(feature = "etcd")]
async fn with_a_crashed_start(server: &dlog_metadata::etcd_server::EtcdServer) -> Backend {
    let store = Arc::new(AnyStore::open(&server.uri("registration")).await.unwrap());
    let b = Backend {
        store,
        ttl: Duration::from_secs(2),
        disks: tempfile::tempdir().unwrap(),
        _guard: Box::new(()),
    };
    drop(b.start().await.unwrap());
    b
}

/// RG5: a start that meets an etcd outage (here while it waits out a crashed incarnation's
/// registration) retries until etcd is back, and the outage does not count against the
/// stale-registration wait.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_rides_out_an_etcd_outage() {
    let mut server = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let b = with_a_crashed_start(&server).await;
    server.kill();
    let (store, config) = (b.store.clone(), b.config());
    let starting = tokio::spawn(async move { Registration::start(store, config).await });
    // Down for longer than the whole stale wait (2 ttls): a start that counted the outage,
    // or gave up on the first unavailable answer, fails.
    tokio::time::sleep(b.ttl * STALE_WAIT_TTLS + Duration::from_secs(1)).await;
    assert!(!starting.is_finished(), "the start waits for etcd");
    server.restart().unwrap();
    let registration = tokio::time::timeout(WAIT_MAX * 2, starting).await.unwrap().unwrap().unwrap();
    let held = b.registered().await.unwrap();
    assert_eq!(held.lease, registration.lease());
    registration.deregister().await.unwrap();
}

/// RG5 against an etcd that is paused (SIGSTOP), not killed: its calls hang instead of being
/// refused, so the start must bound each (ES1) and retry; once etcd goes on it starts.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_rides_out_a_paused_etcd() {
    let server = dlog_metadata::etcd_server::EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let b = with_a_crashed_start(&server).await;
    let pid = server.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(&pid).status().unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    };
    signal("STOP");
    let (store, config) = (b.store.clone(), b.config());
    let starting = tokio::spawn(async move { Registration::start(store, config).await });
    // Paused for longer than one call's bound and the whole stale wait.
    tokio::time::sleep(b.ttl * STALE_WAIT_TTLS + Duration::from_secs(3)).await;
    let still_waiting = !starting.is_finished();
    signal("CONT");
    assert!(still_waiting, "the start waits for the paused etcd");
    let registration = tokio::time::timeout(WAIT_MAX * 2, starting).await.unwrap().unwrap().unwrap();
    let held = b.registered().await.unwrap();
    assert_eq!(held.lease, registration.lease());
    registration.deregister().await.unwrap();
}
