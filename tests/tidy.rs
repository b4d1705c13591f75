//! Source hygiene checks over the workspace's library and binary sources: module docs, where
//! `unsafe` may live and that it is justified, no debugging macros, line and file length.
//!
//! Scans every `.rs` file under engine/src, replication/src, metadata/src, protocol/src and src
//! (skipping `target/` and `fuzz/`). Each rule is its own test and lists every violation it finds.

use std::path::{Path, PathBuf};

const ROOTS: [&str; 5] = ["engine/src", "replication/src", "metadata/src", "protocol/src", "src"];
const SKIP_DIRS: [&str; 2] = ["target", "fuzz"];
/// The only files allowed to contain `unsafe` code.
const UNSAFE_FILES: [&str; 2] = ["engine/src/io/uring.rs", "engine/src/io/buf.rs"];
/// How many lines above an `unsafe {` or `unsafe impl` a `// SAFETY:` comment may sit.
const SAFETY_LINES_ABOVE: usize = 6;
const BANNED_MACROS: [&str; 3] = ["dbg!(", "todo!(", "unimplemented!("];
const LINE_CHARS_MAX: usize = 120;
const FILE_LINES_MAX: usize = 900;

struct Source {
    /// Path relative to the workspace root, with `/` separators.
    rel: String,
    text: String,
    /// `text` with comments and string/char literals blanked out (newlines kept).
    code: String,
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) {
                collect(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for dir in ROOTS {
        collect(&root.join(dir), &mut paths);
    }
    paths.sort();
    let sources: Vec<Source> = paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
            let code = strip_comments_and_literals(&text);
            Source { rel, text, code }
        })
        .collect();
    assert!(
        sources.iter().any(|s| s.rel == "engine/src/lib.rs") && sources.len() >= 10,
        "tidy found only {} files under {ROOTS:?}; is the walk looking in the right place?",
        sources.len()
    );
    sources
}

/// Replaces comments and string/char literal contents with spaces, keeping newlines, so that
/// line numbers still match and words inside them are not mistaken for code.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && raw_prefix_ok(&chars, i) {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &chars[i..j.min(chars.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // Escaped char literal: '\n', '\'', '\u{..}'. Skip the quote, backslash and the
            // escaped char, then up to the closing quote.
            i += 3;
            out.push_str("   ");
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   "); // Plain char literal such as '"'; otherwise a lifetime.
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` starts a raw string prefix (`r` or `br`), not the end of a name.
fn raw_prefix_ok(chars: &[char], i: usize) -> bool {
    let before = |k: usize| i.checked_sub(k).and_then(|j| chars.get(j));
    !is_ident(before(1)) || (before(1) == Some(&'b') && !is_ident(before(2)))
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Byte offsets in `line` where `word` starts as a whole identifier.
fn word_starts(line: &str, word: &str) -> Vec<usize> {
    line.match_indices(word)
        .filter(|(at, _)| {
            let before = line[..*at].chars().next_back();
            let after = line[at + word.len()..].chars().next();
            !is_ident(before.as_ref()) && !is_ident(after.as_ref())
        })
        .map(|(at, _)| at)
        .collect()
}

/// What follows the `unsafe` keyword at `at`, if it is used as a keyword: `{`, `fn`, `impl`,
/// `trait` or `extern`.
fn unsafe_use(line: &str, at: usize) -> Option<&'static str> {
    let rest = line[at + "unsafe".len()..].trim_start();
    ["{", "fn", "impl", "trait", "extern"].into_iter().find(|kw| {
        rest.starts_with(kw) && (*kw == "{" || !is_ident(rest[kw.len()..].chars().next().as_ref()))
    })
}

#[test]
fn tidy_every_file_starts_with_module_docs() {
    let bad: Vec<String> = sources()
        .iter()
        .filter_map(|s| {
            let first = s.text.lines().enumerate().find(|(_, l)| !l.trim().is_empty());
            match first {
                Some((_, line)) if line.trim_start().starts_with("//!") => None,
                Some((n, line)) => Some(format!("{}:{}: first line is not `//!` docs: {line}", s.rel, n + 1)),
                None => Some(format!("{}: empty file, no `//!` docs", s.rel)),
            }
        })
        .collect();
    assert!(bad.is_empty(), "files must open with `//!` docs saying what they own:\n{}", bad.join("\n"));
}

#[test]
fn tidy_unsafe_only_in_io_and_justified() {
    let mut bad = Vec::new();
    for s in sources() {
        let raw: Vec<&str> = s.text.lines().collect();
        for (n, line) in s.code.lines().enumerate() {
            for at in word_starts(line, "unsafe") {
                let Some(what) = unsafe_use(line, at) else { continue };
                if !UNSAFE_FILES.contains(&s.rel.as_str()) {
                    bad.push(format!("{}:{}: `unsafe {what}` outside {UNSAFE_FILES:?}", s.rel, n + 1));
                    continue;
                }
                if what != "{" && what != "impl" {
                    continue;
                }
                let justified =
                    raw[n.saturating_sub(SAFETY_LINES_ABOVE)..n].iter().any(|l| l.contains("// SAFETY:"));
                if !justified {
                    bad.push(format!(
                        "{}:{}: `unsafe {what}` without a `// SAFETY:` comment in the {SAFETY_LINES_ABOVE} \
                         lines above",
                        s.rel,
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "unsafe code rules violated:\n{}", bad.join("\n"));
}

#[test]
fn tidy_no_debugging_macros() {
    let mut bad = Vec::new();
    for s in sources() {
        for (n, line) in s.code.lines().enumerate() {
            for mac in BANNED_MACROS {
                let name = &mac[..mac.len() - 2];
                let called =
                    line.match_indices(mac).any(|(at, _)| !is_ident(line[..at].chars().next_back().as_ref()));
                if called {
                    bad.push(format!("{}:{}: {name}! call", s.rel, n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "debugging macros left in sources:\n{}", bad.join("\n"));
}

#[test]
fn tidy_lines_at_most_120_chars() {
    let mut bad = Vec::new();
    for s in sources() {
        for (n, line) in s.text.lines().enumerate() {
            let chars = line.chars().count();
            if chars > LINE_CHARS_MAX {
                bad.push(format!("{}:{}: {chars} chars", s.rel, n + 1));
            }
        }
    }
    assert!(bad.is_empty(), "lines longer than {LINE_CHARS_MAX} characters:\n{}", bad.join("\n"));
}

#[test]
fn tidy_files_at_most_900_lines() {
    let mut sizes: Vec<(usize, String)> =
        sources().into_iter().map(|s| (s.text.lines().count(), s.rel)).collect();
    sizes.sort_by(|a, b| b.cmp(a));
    let over: Vec<String> = sizes
        .iter()
        .filter(|(n, _)| *n > FILE_LINES_MAX)
        .map(|(n, rel)| format!("{rel}: {n} lines"))
        .collect();
    let largest: Vec<String> = sizes.iter().take(5).map(|(n, rel)| format!("{rel}: {n}")).collect();
    assert!(
        over.is_empty(),
        "files longer than {FILE_LINES_MAX} lines:\n{}\nlargest files: {}",
        over.join("\n"),
        largest.join(", ")
    );
}

#[test]
fn tidy_stripper_sees_only_code() {
    let code = strip_comments_and_literals(
        "let a = \"unsafe { x }\"; // unsafe {\n/* todo!( */ let c = '\"'; let q = '\\''; unsafe { f() }\nbr#\"dbg!(\"#",
    );
    let lines: Vec<&str> = code.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(!lines[0].contains("unsafe"), "{code:?}");
    assert!(!lines[1].contains("todo") && lines[1].contains("unsafe { f() }"), "{code:?}");
    assert!(!lines[2].contains("dbg"), "{code:?}");
    assert_eq!(unsafe_use("unsafe impl Send", 0), Some("impl"));
    assert_eq!(unsafe_use("unsafe_code", 0), None);
    assert!(word_starts("#![expect(unsafe_code)]", "unsafe").is_empty());
}
