//! `cargo xtask tidy`: checks on the source text that neither rustc nor clippy
//! make.
//!
//! Every `.rs` file under `crates/`, `examples/`, `benches/`, `xtask/` and
//! `tests-integration/` (skipping `target/` and hidden folders) is checked:
//!
//! - its first non-empty line is a `//!` doc comment;
//! - the keyword `unsafe` appears in code (not in comments or string literals)
//!   only under `crates/sys/`, and `unsafe_code` is allowed nowhere else;
//! - under `crates/sys/`, every `unsafe {` block has a `// SAFETY:` comment on
//!   its line or within the 6 lines above, and every `pub unsafe fn` has a
//!   `# Safety` section in its doc comment;
//! - every crate under `crates/` has `#![forbid(unsafe_code)]` in `src/lib.rs`,
//!   except `crates/sys`, which has `#![deny(unsafe_code)]`;
//! - every CPython method that `docs/conformance.md` calls `ported` names a
//!   test that exists in `tests-integration/tests/cpython_*.rs`, and the
//!   table's totals match its rows;
//! - mp-sys's library code (`crates/sys/src/`) opens at most
//!   [`UNSAFE_BUDGET`] `unsafe` blocks: the count is printed, and a change that
//!   writes a new one where a safe wrapper (nix, std) exists fails here;
//! - no crate under `crates/` has an import circle among its modules
//!   (`cargo xtask modules` draws the layers).
//!
//! The checks take a path and a text and return violations, so they are tested
//! on small inputs below; only [`run`] touches the file system.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{Failed, Session, relative};

/// The folders whose `.rs` files are checked, relative to the workspace root.
const ROOTS: &[&str] = &["crates", "examples", "benches", "xtask", "tests-integration", "testkit"];

/// The only folder where `unsafe` may appear.
const SYS: &str = "crates/sys/";

/// The most `unsafe` blocks mp-sys's library code may open. It was 99 with
/// every system call written over libc; system calls that nix wraps safely
/// go through nix, what nix lacks (futex, pidfd, `atexit`, ...) stays on libc
/// with its reason in the module docs, and the budget only ever comes down.
/// Of the 36: two are the test allocator's (`mp_sys::mem::LargestAllocation`)
/// and one the assembly of the x86-64 bulk copy of shared memory (`memcpy`'s
/// speed with byte-wise atomic accesses).
const UNSAFE_BUDGET: usize = 35;

/// Crates whose import circle is known and not yet taken apart; the list
/// only shrinks (tidy fails when a listed crate has no circle any more).
/// mp-pool: `core -> task -> result -> core`.
const KNOWN_CIRCLES: &[&str] = &["crates/pool"];

/// How many lines above an `unsafe {` a `// SAFETY:` comment may be.
const SAFETY_REACH: usize = 6;

/// One finding, printed as `path:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    path: String,
    /// 1-based.
    line: usize,
    message: String,
}

impl Violation {
    fn new(path: &str, line: usize, message: impl Into<String>) -> Violation {
        Violation {
            path: path.to_owned(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// The `tidy` step: checks the tree and prints each violation.
pub(crate) fn run(session: &mut Session) -> Result<(), Failed> {
    session.step("tidy", |session| {
        let root = session.root().to_path_buf();
        println!("    checking .rs files under {}", ROOTS.join("/, ") + "/");
        let mut violations = Vec::new();
        let mut files = 0;
        let mut unsafe_blocks = 0;
        for path in rust_files(&root) {
            let rel = relative(&root, &path);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    if rel.starts_with("crates/sys/src/") {
                        unsafe_blocks += count_unsafe_blocks(&text);
                    }
                    violations.extend(check_file(&rel, &text));
                }
                Err(err) => violations.push(Violation::new(&rel, 1, format!("unreadable: {err}"))),
            }
            files += 1;
        }
        for dir in crate_dirs(&root) {
            let rel = relative(&root, &dir);
            let lib = fs::read_to_string(dir.join("src/lib.rs")).ok();
            violations.extend(check_crate_root(&rel, lib.as_deref()));
        }
        let doc = fs::read_to_string(root.join("docs/conformance.md")).unwrap_or_default();
        let sources: String = fs::read_dir(root.join("tests-integration/tests"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("cpython_"))
                    .filter_map(|e| fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        violations.extend(check_conformance(&doc, &sources));
        for dir in crate::modules::crate_dirs(&root) {
            let rel = relative(&root, &dir);
            let (_, circle) = crate::modules::layers(&crate::modules::graph(&dir.join("src")));
            let known = KNOWN_CIRCLES.contains(&rel.as_str());
            if known && circle.is_none() {
                violations.push(Violation::new(
                    &rel,
                    1,
                    "no import circle any more: remove the crate from KNOWN_CIRCLES in xtask/src/tidy.rs",
                ));
            }
            if let Some(circle) = circle.filter(|_| !known) {
                violations.push(Violation::new(
                    &relative(&root, &dir.join("src")),
                    1,
                    format!(
                        "import circle {}: move what both sides need into a lower module (`cargo xtask modules` draws the layers)",
                        circle.join(" -> ")
                    ),
                ));
            }
        }
        println!("    {unsafe_blocks} unsafe blocks in crates/sys/src (budget {UNSAFE_BUDGET})");
        if unsafe_blocks > UNSAFE_BUDGET {
            violations.push(Violation::new(
                "crates/sys/src",
                1,
                format!(
                    "{unsafe_blocks} unsafe blocks, over the budget of {UNSAFE_BUDGET}: use nix's (or std's) safe \
                     wrapper for the new system call, or remove another block"
                ),
            ));
        }
        for violation in &violations {
            println!("{violation}");
        }
        if violations.is_empty() {
            println!("    {files} files, no violations");
            Ok(())
        } else {
            eprintln!("error: tidy found {} violation(s) in {files} files", violations.len());
            Err(Failed)
        }
    })
}

/// The `.rs` files under [`ROOTS`], sorted, without `target/` and hidden folders.
fn rust_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, out);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for dir in ROOTS {
        walk(&root.join(dir), &mut out);
    }
    out
}

/// The folders directly under `crates/` that hold a `Cargo.toml`, sorted.
fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root.join("crates")) else {
        return Vec::new();
    };
    let mut dirs: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The per-file checks. `path` is relative to the workspace root, with `/`.
pub(crate) fn check_file(path: &str, text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let raw: Vec<&str> = text.split('\n').collect();
    let code = code_only(text);
    let code: Vec<&str> = code.split('\n').collect();
    debug_assert_eq!(raw.len(), code.len());

    // (a) The `//!` header (or a crate doc taken from a file, as the facade
    // takes the README).
    match raw.iter().position(|line| !line.trim().is_empty()) {
        Some(i)
            if raw[i].trim_start().starts_with("//!") || raw[i].trim_start().starts_with("#![doc = include_str!(") => {}
        Some(i) => out.push(Violation::new(
            path,
            i + 1,
            "the file must open with a `//!` doc comment saying what it is for",
        )),
        None => out.push(Violation::new(
            path,
            1,
            "empty file: it must open with a `//!` doc comment",
        )),
    }

    let in_sys = path.starts_with(SYS);
    for (i, line) in code.iter().enumerate() {
        if !in_sys {
            // (b) No `unsafe` outside crates/sys.
            if find_word(line, "unsafe").is_some() {
                out.push(Violation::new(
                    path,
                    i + 1,
                    "`unsafe` outside crates/sys: all unsafe code lives in mp-sys behind a safe wrapper",
                ));
            }
            let squashed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            if squashed.contains("allow(unsafe_code)") || squashed.contains("expect(unsafe_code)") {
                out.push(Violation::new(
                    path,
                    i + 1,
                    "`unsafe_code` may be allowed only in crates/sys",
                ));
            }
            continue;
        }
        // (c) Under crates/sys: `// SAFETY:` for blocks, `# Safety` for pub fns.
        if opens_unsafe_block(line) {
            let from = i.saturating_sub(SAFETY_REACH);
            if !raw[from..=i].iter().any(|l| l.contains("// SAFETY:")) {
                out.push(Violation::new(
                    path,
                    i + 1,
                    format!(
                        "`unsafe` block without a `// SAFETY:` comment on its line or in the {SAFETY_REACH} lines above"
                    ),
                ));
            }
        }
        if is_pub_unsafe_fn(line) && !doc_above(&raw, i).contains("# Safety") {
            out.push(Violation::new(
                path,
                i + 1,
                "`pub unsafe fn` without a `# Safety` section in its doc comment",
            ));
        }
    }
    out
}

/// Check (d): `crate_dir` is e.g. `crates/codec`; `lib` is its `src/lib.rs`.
pub(crate) fn check_crate_root(crate_dir: &str, lib: Option<&str>) -> Vec<Violation> {
    let lib_path = format!("{crate_dir}/src/lib.rs");
    let is_sys = format!("{crate_dir}/") == SYS;
    let wanted = if is_sys {
        "#![deny(unsafe_code)]"
    } else {
        "#![forbid(unsafe_code)]"
    };
    let Some(lib) = lib else {
        return vec![Violation::new(
            &lib_path,
            1,
            format!("missing: every crate under crates/ is a library with `{wanted}`"),
        )];
    };
    let found = code_only(lib).split('\n').any(|line| {
        let squashed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        squashed.contains(wanted)
    });
    if found {
        Vec::new()
    } else {
        let why = if is_sys {
            "mp-sys must deny unsafe code, allowing it item by item"
        } else {
            "only mp-sys may contain unsafe code"
        };
        vec![Violation::new(&lib_path, 1, format!("missing `{wanted}`: {why}"))]
    }
}

/// `text` with comments removed and the contents of string and character
/// literals blanked (their quotes stay), keeping every newline so that line
/// numbers agree with the original.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    // Keeps newlines of skipped text; everything else in it is dropped.
    let skip = |out: &mut String, c: char| {
        if c == '\n' {
            out.push('\n');
        }
    };
    let mut i = 0;
    while let Some(c) = at(i) {
        match c {
            '/' if at(i + 1) == Some('/') => {
                while at(i).is_some_and(|c| c != '\n') {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0usize;
                while let Some(c) = at(i) {
                    if c == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if c == '*' && at(i + 1) == Some('/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        skip(&mut out, c);
                        i += 1;
                    }
                }
            }
            '"' => {
                out.push('"');
                i += 1;
                while let Some(c) = at(i) {
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = at(i) {
                                skip(&mut out, escaped);
                                i += 1;
                            }
                        }
                        _ => skip(&mut out, c),
                    }
                }
                out.push('"');
            }
            'r' if !is_ident(i.checked_sub(1).and_then(at))
                || (i >= 1 && at(i - 1) == Some('b') && !is_ident(i.checked_sub(2).and_then(at))) =>
            {
                // A raw string `r#"…"#` (or `br…`), else an identifier starting with r.
                let mut hashes = 0;
                while at(i + 1 + hashes) == Some('#') {
                    hashes += 1;
                }
                if at(i + 1 + hashes) != Some('"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                out.push_str("r\"");
                i += hashes + 2;
                while let Some(c) = at(i) {
                    if c == '"' && (1..=hashes).all(|k| at(i + k) == Some('#')) {
                        i += hashes + 1;
                        break;
                    }
                    skip(&mut out, c);
                    i += 1;
                }
                out.push('"');
            }
            '\'' => {
                if at(i + 1) == Some('\\') {
                    // An escaped character literal: '\n', '\'', '\u{..}'.
                    i += 3;
                    while at(i).is_some_and(|c| c != '\'' && c != '\n') {
                        i += 1;
                    }
                    i += 1;
                    out.push_str("''");
                } else if at(i + 2) == Some('\'') && at(i + 1) != Some('\n') {
                    i += 3;
                    out.push_str("''");
                } else {
                    // A lifetime or a label.
                    out.push('\'');
                    i += 1;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The byte offset of `word` in `line` where it stands as a whole word.
fn find_word(line: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = line[from..].find(word) {
        let start = from + pos;
        let end = start + word.len();
        let before = line[..start].chars().next_back();
        let after = line[end..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(start);
        }
        from = end;
    }
    None
}

/// How many `unsafe { … }` blocks the code of `text` opens (comments and
/// string literals aside), doc examples included: they compile and run too.
fn count_unsafe_blocks(text: &str) -> usize {
    let in_code = code_only(text)
        .split('\n')
        .filter(|line| opens_unsafe_block(line))
        .count();
    let in_docs = text
        .lines()
        .filter_map(|line| {
            let t = line.trim_start();
            t.strip_prefix("///").or_else(|| t.strip_prefix("//!"))
        })
        .filter(|doc| opens_unsafe_block(doc.trim_start_matches(['#', ' '])))
        .count();
    in_code + in_docs
}

/// Whether a code line opens an `unsafe { … }` block.
fn opens_unsafe_block(line: &str) -> bool {
    let mut rest = line;
    while let Some(pos) = find_word(rest, "unsafe") {
        let after = &rest[pos + "unsafe".len()..];
        if after.trim_start().starts_with('{') {
            return true;
        }
        rest = after;
    }
    false
}

/// Whether a code line declares a `pub unsafe fn` (also `pub const unsafe fn`,
/// `pub unsafe extern "C" fn`).
fn is_pub_unsafe_fn(line: &str) -> bool {
    let words: Vec<&str> = line
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let trimmed = line.trim_start();
    if !(trimmed.starts_with("pub ") || trimmed.starts_with("pub\t")) {
        return false;
    }
    let unsafe_at = words.iter().position(|w| *w == "unsafe");
    let fn_at = words.iter().position(|w| *w == "fn");
    matches!((unsafe_at, fn_at), (Some(u), Some(f)) if u < f)
}

/// The doc comment above line `i` (skipping attributes), joined.
fn doc_above(raw: &[&str], i: usize) -> String {
    let mut doc = Vec::new();
    for line in raw[..i].iter().rev() {
        let line = line.trim();
        if line.starts_with("///") || line.starts_with("#[doc") {
            doc.push(line);
        } else if line.starts_with("#[") {
            continue;
        } else {
            break;
        }
    }
    doc.reverse();
    doc.join("\n")
}

/// `docs/conformance.md`: each `ported` row's Rust test (the first
/// `` `Class::method` `` of its last column) exists in `sources` (the
/// `cpython_*.rs` files), and the `**all**` totals row adds up its rows.
fn check_conformance(doc: &str, sources: &str) -> Vec<Violation> {
    const PATH: &str = "docs/conformance.md";
    let mut out = Vec::new();
    let (mut methods, mut ported, mut na, mut failing) = (0usize, 0usize, 0usize, 0usize);
    let mut in_totals = false;
    for (i, line) in doc.lines().enumerate() {
        if line.starts_with("## ") {
            in_totals = line.trim() == "## Totals";
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        if in_totals || !line.starts_with("| ") || cells.len() < 3 || line.starts_with("|---") {
            continue;
        }
        let status = cells[1].trim();
        if status == "status" {
            continue;
        }
        methods += 1;
        if status.starts_with("ported") {
            ported += 1;
            let test = cells[2].trim().strip_prefix('`').and_then(|t| t.split('`').next());
            match test {
                Some(name) if name.contains("::") => {
                    if !sources.contains(&format!("\"{name}\"")) {
                        out.push(Violation::new(
                            PATH,
                            i + 1,
                            format!("no test named {name:?} in tests-integration"),
                        ));
                    }
                }
                _ => out.push(Violation::new(
                    PATH,
                    i + 1,
                    "a ported row must start its last column with `Class::method`",
                )),
            }
        } else if status.starts_with("not applicable") {
            na += 1;
        } else if status.starts_with("failing") {
            failing += 1;
        } else {
            out.push(Violation::new(PATH, i + 1, format!("unknown status {status:?}")));
        }
    }
    if let Some((i, line)) = doc.lines().enumerate().find(|(_, l)| l.starts_with("| **all**")) {
        let numbers: Vec<usize> = line
            .split('|')
            .filter_map(|c| c.trim().trim_matches('*').parse().ok())
            .collect();
        // methods, ported, of which deliberate, not applicable, failing
        if numbers.len() != 5
            || numbers[0] != methods
            || numbers[1] != ported
            || numbers[3] != na
            || numbers[4] != failing
        {
            out.push(Violation::new(
                PATH,
                i + 1,
                format!("the totals say {numbers:?}; the rows count {methods} methods, {ported} ported, {na} not applicable, {failing} failing"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(path: &str, text: &str) -> Vec<(usize, String)> {
        check_file(path, text)
            .into_iter()
            .map(|v| (v.line, v.message))
            .collect()
    }

    fn lines(path: &str, text: &str) -> Vec<usize> {
        check_file(path, text).into_iter().map(|v| v.line).collect()
    }

    #[test]
    fn header_must_be_inner_doc() {
        assert!(check_file("crates/a/src/lib.rs", "//! Good.\nfn f() {}\n").is_empty());
        assert!(check_file("crates/a/src/lib.rs", "\n\n  //! Fine after blanks.\n").is_empty());
        assert_eq!(lines("examples/x.rs", "// Plain.\nfn main() {}\n"), [1]);
        assert_eq!(lines("examples/x.rs", "\nuse std::io;\n"), [2]);
        assert_eq!(lines("examples/x.rs", "/// Outer doc.\nfn main() {}\n"), [1]);
        let empty = messages("examples/x.rs", "");
        assert_eq!(empty.len(), 1);
        assert!(empty[0].1.contains("empty file"));
    }

    #[test]
    fn conformance_rows_name_real_tests_and_add_up() {
        let doc = "## Totals\n| **all** | | **3** | **2** | **0** | **1** | **0** |\n## P\n| CPython method | status | Rust test / reason |\n|---|---|---|\n| `a` | ported | `C::a`: fine |\n| `b` | ported | `C::b` |\n| `c` | not applicable | Windows |\n";
        assert!(check_conformance(doc, "\"C::a\" \"C::b\"").is_empty());
        assert_eq!(check_conformance(doc, "\"C::a\"").len(), 1);
        let wrong = doc.replace("**3**", "**4**");
        assert_eq!(check_conformance(&wrong, "\"C::a\" \"C::b\"").len(), 1);
    }

    #[test]
    fn unsafe_blocks_are_counted_in_code_only() {
        let text = "//! X.\n// unsafe { in a comment }\nfn f() {\n    unsafe { g() };\n    let s = \"unsafe { no }\";\n    unsafe { h() }\n}\n";
        assert_eq!(count_unsafe_blocks(text), 2);
    }

    #[test]
    fn unsafe_blocks_in_doc_examples_count() {
        let text =
            "//! ```\n//! unsafe { a() };\n//! ```\n/// ```\n/// # let x = unsafe { b() };\n/// ```\nfn f() {}\n";
        assert_eq!(count_unsafe_blocks(text), 2);
    }

    #[test]
    fn unsafe_only_in_sys() {
        let text = "//! X.\nfn f() {\n    unsafe { g() }\n}\nunsafe fn g() {}\nunsafe impl Send for S {}\nunsafe extern \"C\" {}\n";
        assert_eq!(lines("crates/codec/src/lib.rs", text), [3, 5, 6, 7]);
        assert_eq!(lines("examples/tour.rs", "//! X.\nfn f() { unsafe{ g() } }\n"), [2]);
        let allow = "//! X.\n#[allow(unsafe_code)]\nfn f() {}\n";
        assert_eq!(lines("crates/pool/src/lib.rs", allow), [2]);
        // Under crates/sys the same text only needs its SAFETY comments.
        let sys = "//! X.\nfn f() {\n    // SAFETY: g has no preconditions.\n    unsafe { g() }\n}\n";
        assert!(check_file("crates/sys/src/lib.rs", sys).is_empty());
        assert!(check_file("crates/sys/src/lib.rs", allow).is_empty());
    }

    #[test]
    fn unsafe_in_comments_strings_and_names_is_fine() {
        let text = r##"//! Mentions unsafe { in the header.
// unsafe fn in a comment.
/* unsafe impl in a block comment,
   /* nested */ unsafe { still a comment */
fn f() -> &'static str {
    let _c = '"';
    let _d = '\'';
    let _e = "unsafe { in a string \" still string }";
    let _r = r#"unsafe fn in a "raw" string"#;
    let not_unsafe_name = is_unsafe();
    "done"
}
#![forbid(unsafe_code)]
"##;
        assert_eq!(messages("crates/codec/src/x.rs", text), []);
        // But code after a string on the same line is still seen.
        assert_eq!(
            lines("crates/codec/src/x.rs", "//! X.\nlet s = \"a\"; unsafe { f() }\n"),
            [2]
        );
    }

    #[test]
    fn code_only_keeps_line_numbers() {
        let text = "a /* x\ny */ b\n\"s\nt\" c // d\nr#\"e\nf\"# g\n";
        let code = code_only(text);
        assert_eq!(code.split('\n').count(), text.split('\n').count());
        assert_eq!(code, "a \n b\n\"\n\" c \nr\"\n\" g\n");
    }

    #[test]
    fn safety_comment_within_six_lines() {
        let near = "//! X.\n// SAFETY: fine.\n\n\n\n\n\nunsafe { f() }\n";
        assert!(check_file("crates/sys/src/a.rs", near).is_empty());
        let far = "//! X.\n// SAFETY: too far.\n\n\n\n\n\n\nunsafe { f() }\n";
        assert_eq!(lines("crates/sys/src/a.rs", far), [9]);
        let same_line = "//! X.\nlet x = unsafe { f() }; // SAFETY: fine.\n";
        assert!(check_file("crates/sys/src/a.rs", same_line).is_empty());
        let missing = "//! X.\nfn f() {\n    unsafe {\n        g()\n    }\n}\n";
        let found = messages("crates/sys/src/a.rs", missing);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 3);
        assert!(found[0].1.contains("// SAFETY:"));
        // An unsafe fn or impl is not a block.
        let decl = "//! X.\nunsafe fn f() {}\n";
        assert!(check_file("crates/sys/src/a.rs", decl).is_empty());
    }

    #[test]
    fn pub_unsafe_fn_needs_safety_section() {
        let good =
            "//! X.\n/// Does it.\n///\n/// # Safety\n/// `p` is valid.\n#[inline]\npub unsafe fn f(p: *const u8) {}\n";
        assert!(check_file("crates/sys/src/a.rs", good).is_empty());
        let bad = "//! X.\n/// Does it.\n#[inline]\npub unsafe fn f(p: *const u8) {}\n";
        assert_eq!(lines("crates/sys/src/a.rs", bad), [4]);
        let undocumented = "//! X.\npub const unsafe fn f() {}\n";
        assert_eq!(lines("crates/sys/src/a.rs", undocumented), [2]);
        let ext = "//! X.\npub unsafe extern \"C\" fn f() {}\n";
        assert_eq!(lines("crates/sys/src/a.rs", ext), [2]);
        // A private unsafe fn is clippy's business, not ours.
        let private = "//! X.\nunsafe fn f() {}\n";
        assert!(check_file("crates/sys/src/a.rs", private).is_empty());
    }

    #[test]
    fn crate_roots_forbid_or_deny_unsafe() {
        let forbid = "//! X.\n#![forbid(unsafe_code)]\n";
        let deny = "//! X.\n#![deny(unsafe_code)]\n";
        assert!(check_crate_root("crates/codec", Some(forbid)).is_empty());
        assert!(check_crate_root("crates/sys", Some(deny)).is_empty());
        assert_eq!(check_crate_root("crates/codec", Some(deny)).len(), 1);
        assert_eq!(check_crate_root("crates/sys", Some(forbid)).len(), 1);
        let commented = "//! X.\n// #![forbid(unsafe_code)]\n";
        assert_eq!(check_crate_root("crates/codec", Some(commented)).len(), 1);
        let missing = check_crate_root("crates/pool", None);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].to_string().split(':').next(), Some("crates/pool/src/lib.rs"));
    }

    #[test]
    fn violation_format() {
        let v = Violation::new("crates/a/src/lib.rs", 7, "bad");
        assert_eq!(v.to_string(), "crates/a/src/lib.rs:7: bad");
    }
}
