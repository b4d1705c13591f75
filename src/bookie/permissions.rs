//! `Permissions`: which identity may read and which may write each namespace's segments on
//! this bookie (`permissions_file`), and what one identity may do to one segment (`Allowed`).
//!
//! Owns: the permissions file's format and checks, the map from a request to the access it
//! needs (`access_of`), and the decision for an identity and a segment's namespace (`decide`).
//! Does not own: who a client is (auth.rs gives the identity), where a segment's namespace
//! comes from (segment_owners.rs asks the metadata), refusing requests (connection.rs).
//!
//! The file is TOML, one table per identity:
//!
//! ```toml
//! [orders-service]
//! write = ["orders"]            # add, fence, recover, write LAC, delete; reads too
//! [analytics]
//! read = ["orders", "clicks"]   # read entries and LACs, long polls
//! [autorecovery]
//! write = ["*"]                 # every namespace, and segments of no log
//! ```
//!
//! Invariants:
//! - PM1: an identity the file does not name may do nothing; a namespace no grant names is
//!   closed to it. There is no implicit grant: with a permissions file, every identity
//!   (including `anonymous`) needs a table.
//! - PM2: write implies read: a writer recovering its log reads (fenced) what it did not write.
//! - PM3: `"*"` is the only pattern: it covers every namespace and the segments that belong to
//!   no log (created through the replication API, or whose metadata is gone). A namespace
//!   grant covers that namespace's segments only.
//! - PM4: deleting a segment whose metadata is gone but whose deletion is queued
//!   (`deletions/<id>`: a truncation removed it) needs a write grant of any scope: the
//!   metadata was the only record of its namespace, and the segment is on its way out anyway.
//!   A segment with neither (never created, or long gone) is `"*"`'s only: DELETE_SEGMENT
//!   marks a segment deleted on the bookie for good (adds refused, reads absent) even before
//!   it exists, so a lesser grant could block another namespace's future segments.
//! - PM5: fencing is a write: a fenced read or fenced LAC read stops the segment's writer, so
//!   a reader may not do it.
//! - PM6: the file is checked whole at load: names are identities (AU4) and namespace names
//!   (metadata `check_name`) or `"*"`, keys are only `read` and `write`; a bad file is
//!   refused, never half applied.

use std::collections::HashMap;
use std::path::Path;

use dlog_protocol::Request;

use crate::bookie::auth::check_identity;

/// What a request does to its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads entries or LACs (READ, READ_RANGE, READ_LAC, LONG_POLL).
    Read,
    /// Changes the segment: ADD (plain or recovery), WRITE_LAC, and fenced reads (PM5).
    Write,
    /// DELETE_SEGMENT.
    Delete,
}

impl Access {
    /// The access as a verb, for refusals.
    pub fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Delete => "delete",
        }
    }
}

/// The segment a request is about and the access it needs; `None` for AUTH (no segment).
pub fn access_of(request: &Request) -> Option<(u64, Access)> {
    Some(match request {
        Request::Add { segment, .. } | Request::WriteLastAddConfirmed { segment, .. } => {
            (*segment, Access::Write)
        }
        Request::Read { segment, fence, .. } | Request::ReadLastAddConfirmed { segment, fence } => {
            (*segment, if fence.is_some() { Access::Write } else { Access::Read })
        }
        Request::LongPoll { segment, .. } | Request::ReadRange { segment, .. } => (*segment, Access::Read),
        Request::DeleteSegment { segment } => (*segment, Access::Delete),
        Request::Auth { .. } => return None,
    })
}

/// Where a segment belongs, as the metadata says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentNamespace {
    /// A segment of a log in this namespace.
    Log(String),
    /// A segment with metadata but no log (the replication API's own segments).
    NoLog,
    /// No metadata, and its deletion is queued (`deletions/<id>`): a truncation removed it.
    BeingDeleted,
    /// No metadata and no queued deletion: never created, or long gone.
    Missing,
}

/// What one identity may do to one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Read it.
    pub read: bool,
    /// Write or fence it.
    pub write: bool,
    /// Delete it.
    pub delete: bool,
}

impl Allowed {
    /// Everything (no permissions file).
    pub const ALL: Allowed = Allowed { read: true, write: true, delete: true };

    /// Whether `access` is allowed.
    pub fn covers(self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
            Access::Delete => self.delete,
        }
    }
}

/// What one identity was granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Grants {
    read: Vec<String>,
    write: Vec<String>,
}

/// The pattern covering every namespace and segments of no log (PM3).
pub const EVERY_NAMESPACE: &str = "*";

fn covers(scopes: &[String], namespace: Option<&str>) -> bool {
    scopes.iter().any(|scope| scope == EVERY_NAMESPACE || Some(scope.as_str()) == namespace)
}

/// The permissions file, loaded (PM6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    grants: HashMap<String, Grants>,
}

impl Permissions {
    /// Reads and checks a permissions file.
    pub fn from_file(path: &Path) -> Result<Permissions, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Permissions::parse(&text)
    }

    /// Parses and checks the text of a permissions file (PM6).
    pub fn parse(text: &str) -> Result<Permissions, String> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| format!("not TOML: {}", e.message().trim()))?;
        let mut grants = HashMap::with_capacity(table.len());
        for (identity, value) in table {
            check_identity(&identity).map_err(|why| format!("identity {identity:?}: {why}"))?;
            let toml::Value::Table(rules) = value else {
                return Err(format!(
                    "{identity}: expected a table like [{identity}] read = [...] write = [...]"
                ));
            };
            let mut granted = Grants::default();
            for (key, value) in rules {
                let scopes = match key.as_str() {
                    "read" => &mut granted.read,
                    "write" => &mut granted.write,
                    _ => return Err(format!("{identity}: unknown key {key:?} (expected read, write)")),
                };
                *scopes = namespaces(&identity, &key, &value)?;
            }
            grants.insert(identity, granted);
        }
        if grants.is_empty() {
            return Err("no identities: nobody could read or write (one [identity] table each)".into());
        }
        Ok(Permissions { grants })
    }

    /// The identities the file names.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.grants.keys().map(String::as_str)
    }

    /// What `identity` may do to a segment that belongs to `namespace` (PM1-PM5).
    pub fn decide(&self, identity: &str, namespace: &SegmentNamespace) -> Allowed {
        let Some(grants) = self.grants.get(identity) else {
            return Allowed::default(); // PM1
        };
        let scope = match namespace {
            SegmentNamespace::Log(namespace) => Some(namespace.as_str()),
            SegmentNamespace::NoLog | SegmentNamespace::BeingDeleted | SegmentNamespace::Missing => None, // PM3
        };
        let write = covers(&grants.write, scope);
        let read = write || covers(&grants.read, scope); // PM2
        let delete = match namespace {
            SegmentNamespace::BeingDeleted => !grants.write.is_empty(), // PM4
            _ => write,
        };
        Allowed { read, write, delete }
    }

    /// Whether `identity` may do `access` whatever the segment's namespace, when that is known
    /// without it: refused with no grant that could cover it, allowed by `"*"` where it covers
    /// every segment. `None`: the namespace decides (a lookup).
    pub fn regardless_of_namespace(&self, identity: &str, access: Access) -> Option<bool> {
        let Some(grants) = self.grants.get(identity) else {
            return Some(false); // PM1
        };
        let every = |scopes: &[String]| scopes.iter().any(|scope| scope == EVERY_NAMESPACE);
        if every(&grants.write) || (access == Access::Read && every(&grants.read)) {
            return Some(true); // PM2, PM3
        }
        let none = match access {
            Access::Read => grants.read.is_empty() && grants.write.is_empty(),
            Access::Write | Access::Delete => grants.write.is_empty(),
        };
        if none { Some(false) } else { None }
    }
}

fn namespaces(identity: &str, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let expected = || format!("{identity}.{key}: expected a list of namespace names or \"*\"");
    let list = value.as_array().ok_or_else(expected)?;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let name = item.as_str().ok_or_else(expected)?;
        if name != EVERY_NAMESPACE {
            dlog_metadata::schema::check_name("namespace", name)
                .map_err(|e| format!("{identity}.{key}: {e}"))?;
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const FILE: &str = r#"
        writer = { write = ["orders"] }
        [reader]
        read = ["orders", "clicks"]
        [admin]
        write = ["*"]
        [nobody]
    "#;

    fn log(namespace: &str) -> SegmentNamespace {
        SegmentNamespace::Log(namespace.into())
    }

    #[test]
    fn grants_decide_per_namespace() {
        let p = Permissions::parse(FILE).unwrap();
        let rw = Allowed::ALL;
        let ro = Allowed { read: true, ..Allowed::default() };
        let none = Allowed::default();
        assert_eq!(p.decide("writer", &log("orders")), rw, "PM2: write implies read");
        assert_eq!(p.decide("writer", &log("clicks")), none);
        assert_eq!(p.decide("writer", &SegmentNamespace::NoLog), none, "PM3");
        let gone = Allowed { delete: true, ..Allowed::default() };
        assert_eq!(p.decide("writer", &SegmentNamespace::BeingDeleted), gone, "PM4");
        assert_eq!(p.decide("writer", &SegmentNamespace::Missing), none, "PM4: never created");
        assert_eq!(p.decide("reader", &log("clicks")), ro);
        assert_eq!(p.decide("reader", &log("orders")), ro);
        assert_eq!(p.decide("reader", &SegmentNamespace::BeingDeleted), none, "PM4: readers delete nothing");
        let all = [log("orders"), log("other"), SegmentNamespace::NoLog, SegmentNamespace::BeingDeleted];
        for namespace in all.into_iter().chain([SegmentNamespace::Missing]) {
            assert_eq!(p.decide("admin", &namespace), rw);
            assert_eq!(p.decide("nobody", &namespace), none);
            assert_eq!(p.decide("stranger", &namespace), none, "PM1");
            assert_eq!(p.decide("anonymous", &namespace), none, "PM1");
        }
    }

    #[test]
    fn some_decisions_need_no_namespace() {
        let p = Permissions::parse(FILE).unwrap();
        for access in [Access::Read, Access::Write, Access::Delete] {
            assert_eq!(p.regardless_of_namespace("admin", access), Some(true));
            assert_eq!(p.regardless_of_namespace("nobody", access), Some(false));
            assert_eq!(p.regardless_of_namespace("stranger", access), Some(false));
            assert_eq!(p.regardless_of_namespace("writer", access), None);
        }
        assert_eq!(p.regardless_of_namespace("reader", Access::Read), None);
        assert_eq!(p.regardless_of_namespace("reader", Access::Write), Some(false));
        assert_eq!(p.regardless_of_namespace("reader", Access::Delete), Some(false));
        let readers = Permissions::parse("[all]\nread = [\"*\"]").unwrap();
        assert_eq!(readers.regardless_of_namespace("all", Access::Read), Some(true));
        assert_eq!(readers.regardless_of_namespace("all", Access::Write), Some(false));
        // Every shortcut agrees with the decision a lookup would have made.
        let namespaces = [
            log("orders"),
            log("x"),
            SegmentNamespace::NoLog,
            SegmentNamespace::BeingDeleted,
            SegmentNamespace::Missing,
        ];
        for p in [&p, &readers] {
            for identity in ["admin", "nobody", "stranger", "writer", "reader", "all"] {
                for access in [Access::Read, Access::Write, Access::Delete] {
                    if let Some(allowed) = p.regardless_of_namespace(identity, access) {
                        for namespace in &namespaces {
                            assert_eq!(
                                p.decide(identity, namespace).covers(access),
                                allowed,
                                "{identity} {access:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fencing_needs_write_and_auth_needs_nothing() {
        let key = Bytes::from_static(b"k");
        let fenced = Request::Read { segment: 7, entry: 0, fence: Some(key.clone()) };
        assert_eq!(access_of(&fenced), Some((7, Access::Write)), "PM5");
        let fenced_lac = Request::ReadLastAddConfirmed { segment: 7, fence: Some(key) };
        assert_eq!(access_of(&fenced_lac), Some((7, Access::Write)), "PM5");
        let read = Request::Read { segment: 7, entry: 0, fence: None };
        assert_eq!(access_of(&read), Some((7, Access::Read)));
        let poll = Request::LongPoll { segment: 8, known: None, timeout_ms: 1 };
        assert_eq!(access_of(&poll), Some((8, Access::Read)));
        assert_eq!(access_of(&Request::DeleteSegment { segment: 9 }), Some((9, Access::Delete)));
        assert_eq!(access_of(&Request::Auth { mechanism: 1, token: Bytes::new() }), None);
    }

    #[test]
    fn bad_files_are_refused_with_reasons() {
        for (text, needle) in [
            ("", "no identities"),
            ("not toml", "not TOML"),
            ("a = 1", "expected a table"),
            ("[a]\nread = \"orders\"", "expected a list"),
            ("[a]\nread = [1]", "expected a list"),
            ("[a]\nwrite = [\"or/ders\"]", "namespace name"),
            ("[a]\nwrite = [\"\"]", "namespace name"),
            ("[a]\nadmin = true", "unknown key"),
            ("[\"\"]\nread = [\"x\"]", "empty"),
            ("[\"a\\nb\"]\nread = [\"x\"]", "control"),
        ] {
            let err = Permissions::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
