//! `git check-ref-format --allow-onelevel`, plus what git itself refuses for a branch to
//! check out: a leading `-` (it would be read as an option) and any whitespace.

use std::fmt;

/// Why a string is not a usable git ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefProblem {
    Empty,
    /// Starts with `-`: git reads it as a command-line flag (`-b`, `--orphan`).
    LooksLikeFlag,
    Whitespace,
    ControlCharacter,
    /// One of `~ ^ : ? * [ \`.
    ForbiddenCharacter(char),
    DoubleDot,
    /// `@{` (reflog syntax).
    AtBrace,
    /// The single character `@`.
    LoneAt,
    /// Leading or trailing `/`, or `//`.
    BadSlash,
    TrailingDot,
    /// A component starting with `.`.
    ComponentStartsWithDot,
    /// A component ending with `.lock`.
    ComponentEndsWithLock,
}

impl fmt::Display for RefProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::LooksLikeFlag => {
                f.write_str("it starts with '-', so git reads it as a command-line flag")
            }
            Self::Whitespace => f.write_str("it contains whitespace"),
            Self::ControlCharacter => f.write_str("it contains a control character"),
            Self::ForbiddenCharacter(c) => {
                write!(f, "it contains {c:?}, which git forbids in ref names")
            }
            Self::DoubleDot => f.write_str("it contains '..'"),
            Self::AtBrace => f.write_str("it contains '@{'"),
            Self::LoneAt => f.write_str("it is the single character '@'"),
            Self::BadSlash => f.write_str("it starts or ends with '/' or contains '//'"),
            Self::TrailingDot => f.write_str("it ends with '.'"),
            Self::ComponentStartsWithDot => {
                f.write_str("a '/'-separated component starts with '.'")
            }
            Self::ComponentEndsWithLock => {
                f.write_str("a '/'-separated component ends with '.lock'")
            }
        }
    }
}

/// Accepts `main`, `feature/x`, `refs/heads/x`, `refs/tags/v1.2.3` and commit SHAs (which are
/// valid one-level names); rejects everything `git check-ref-format --allow-onelevel` rejects,
/// names starting with `-`, and whitespace of any kind.
pub fn check_ref(value: &str) -> Result<(), RefProblem> {
    if value.is_empty() {
        return Err(RefProblem::Empty);
    }
    if value.starts_with('-') {
        return Err(RefProblem::LooksLikeFlag);
    }
    for c in value.chars() {
        if c.is_whitespace() {
            return Err(RefProblem::Whitespace);
        }
        if c.is_control() {
            return Err(RefProblem::ControlCharacter);
        }
        if matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\') {
            return Err(RefProblem::ForbiddenCharacter(c));
        }
    }
    if value == "@" {
        return Err(RefProblem::LoneAt);
    }
    if has_pair(value, *b"..") {
        return Err(RefProblem::DoubleDot);
    }
    if has_pair(value, *b"@{") {
        return Err(RefProblem::AtBrace);
    }
    if value.starts_with('/') || value.ends_with('/') || has_pair(value, *b"//") {
        return Err(RefProblem::BadSlash);
    }
    if value.ends_with('.') {
        return Err(RefProblem::TrailingDot);
    }
    for component in value.split('/') {
        if component.starts_with('.') {
            return Err(RefProblem::ComponentStartsWithDot);
        }
        if component.ends_with(".lock") {
            return Err(RefProblem::ComponentEndsWithLock);
        }
    }
    Ok(())
}

/// Whether `value` has the two bytes `pair` side by side. `str::contains` with a string
/// pattern builds a two-way searcher, more code than this policy's whole check, which a
/// review would fetch for patterns of two bytes.
fn has_pair(value: &str, pair: [u8; 2]) -> bool {
    value.as_bytes().windows(2).any(|w| w == pair)
}

/// A full or abbreviated commit id: 7–40 hex digits (SHA-1) or 64 (SHA-256).
pub fn is_commit_sha(value: &str) -> bool {
    let n = value.len();
    ((7..=40).contains(&n) || n == 64) && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_the_runbook_allows() {
        for ok in [
            "main",
            "feature/x",
            "feature/ai-slot-205",
            "refs/heads/main",
            "refs/tags/v1.2.3",
            "release-1.0",
            "a1b2c3d",
            "0123456789abcdef0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "v1.2.3",
            "user@feature",
            "HEAD",
        ] {
            assert_eq!(check_ref(ok), Ok(()), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn refs_git_rejects() {
        use RefProblem::*;
        for (bad, why) in [
            ("", Empty),
            ("-b feature/x", LooksLikeFlag),
            ("-b", LooksLikeFlag),
            ("--orphan", LooksLikeFlag),
            ("--detach", LooksLikeFlag),
            ("feature x", Whitespace),
            ("main\n", Whitespace),
            ("\tmain", Whitespace),
            ("main\u{a0}", Whitespace),
            ("ma\u{7f}in", ControlCharacter),
            ("ma\u{1}in", ControlCharacter),
            ("main~1", ForbiddenCharacter('~')),
            ("main^", ForbiddenCharacter('^')),
            ("a:b", ForbiddenCharacter(':')),
            ("a?b", ForbiddenCharacter('?')),
            ("a*b", ForbiddenCharacter('*')),
            ("a[b", ForbiddenCharacter('[')),
            ("a\\b", ForbiddenCharacter('\\')),
            ("a..b", DoubleDot),
            ("a@{1}", AtBrace),
            ("@", LoneAt),
            ("/main", BadSlash),
            ("main/", BadSlash),
            ("feature//x", BadSlash),
            ("main.", TrailingDot),
            (".hidden", ComponentStartsWithDot),
            ("feature/.x", ComponentStartsWithDot),
            ("main.lock", ComponentEndsWithLock),
            ("feature/x.lock/y", ComponentEndsWithLock),
        ] {
            assert_eq!(check_ref(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn commit_shas() {
        assert!(is_commit_sha("a1b2c3d"));
        assert!(is_commit_sha(&"f".repeat(40)));
        assert!(is_commit_sha(&"0".repeat(64)));
        assert!(!is_commit_sha("a1b2c3"));
        assert!(!is_commit_sha(&"f".repeat(41)));
        assert!(!is_commit_sha("g1b2c3d"));
    }
}
