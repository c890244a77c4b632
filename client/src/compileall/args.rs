//! compileall's command line, parsed the way its argparse parser does for every well-formed
//! command line. Anything else (a usage error, `--help`, an option the target's compileall does
//! not have, an unusual form) is [`Parsed::Delegate`]: the caller runs the interpreter's own
//! `python -m compileall` with the same arguments, so usage errors and help text are exactly
//! the real ones.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::pyc::InvalidationMode;

/// compileall's options after parsing (`args` in its `main()`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompileallArgs {
    /// `-l` (0) or the default (None).
    pub maxlevels: Option<i64>,
    /// `-r N`; takes precedence over `-l`.
    pub recursion: Option<i64>,
    /// `-f`.
    pub force: bool,
    /// Number of `-q`.
    pub quiet: u32,
    /// `-b`.
    pub legacy: bool,
    /// `-d DESTDIR`.
    pub ddir: Option<OsString>,
    /// `-s STRIPDIR`.
    pub stripdir: Option<OsString>,
    /// `-p PREPENDDIR`.
    pub prependdir: Option<OsString>,
    /// `-x REGEXP`.
    pub rx: Option<OsString>,
    /// `-i FILE`.
    pub flist: Option<OsString>,
    /// Positional `FILE|DIR` arguments.
    pub dests: Vec<OsString>,
    /// `-j N`.
    pub workers: i64,
    /// `--invalidation-mode`.
    pub invalidation_mode: Option<InvalidationMode>,
    /// Every `-o LEVEL`, in order (None when absent: compileall uses `[-1]`).
    pub opt_levels: Option<Vec<i64>>,
    /// `-e DIR` (an empty value means none).
    pub limit_sl_dest: Option<OsString>,
    /// `--hardlink-dupes`.
    pub hardlink_dupes: bool,
}

/// The parse result.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command line pycache runs itself.
    Run(Box<CompileallArgs>),
    /// Let the interpreter's compileall handle it; the reason is for logs.
    Delegate(&'static str),
}

/// Which options the target's compileall has (3.8 lacks the 3.9 additions).
#[derive(Clone, Copy, Debug)]
pub struct Dialect {
    /// `-s`, `-p`, `-o`, `-e`, `--hardlink-dupes` exist (3.9+).
    pub has_39_options: bool,
}

const LONG_OPTIONS: [&str; 4] = [
    "--help",
    "--workers",
    "--invalidation-mode",
    "--hardlink-dupes",
];

/// Parses compileall's arguments.
pub fn parse(args: &[OsString], dialect: Dialect) -> Parsed {
    let mut out = CompileallArgs {
        workers: 1,
        ..Default::default()
    };
    let mut positional_groups = 0;
    let mut last_was_positional = false;
    let mut only_positional = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let bytes = arg.as_bytes();
        i += 1;
        if only_positional || bytes == b"-" || !bytes.starts_with(b"-") || is_negative_number(bytes)
        {
            if !last_was_positional {
                positional_groups += 1;
            }
            last_was_positional = true;
            out.dests.push(arg.clone());
            continue;
        }
        if bytes == b"--" {
            // argparse drops the first "--" and treats the rest as positionals.
            only_positional = true;
            continue;
        }
        last_was_positional = false;
        let Some(text) = arg.to_str() else {
            return Parsed::Delegate("non-UTF-8 option");
        };
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let wanted = format!("--{name}");
            let matches: Vec<&str> = LONG_OPTIONS
                .iter()
                .copied()
                .filter(|o| o.starts_with(&wanted))
                .collect();
            let option = match matches.as_slice() {
                [one] => *one,
                _ if LONG_OPTIONS.contains(&wanted.as_str()) => LONG_OPTIONS
                    .iter()
                    .copied()
                    .find(|o| *o == wanted)
                    .expect("present"),
                _ => return Parsed::Delegate("unknown or ambiguous long option"),
            };
            match option {
                "--help" => return Parsed::Delegate("help"),
                "--hardlink-dupes" => {
                    if inline.is_some() || !dialect.has_39_options {
                        return Parsed::Delegate("--hardlink-dupes form");
                    }
                    out.hardlink_dupes = true;
                }
                _ => {
                    let value = match inline {
                        Some(v) => OsString::from(v),
                        None => match take_value(args, &mut i) {
                            Some(v) => v,
                            None => return Parsed::Delegate("missing value"),
                        },
                    };
                    if let Err(why) = apply_value(
                        &mut out,
                        if option == "--workers" { 'j' } else { 'M' },
                        value,
                        dialect,
                    ) {
                        return Parsed::Delegate(why);
                    }
                }
            }
            continue;
        }
        // A cluster of short options: flags, then at most one option taking a value.
        let cluster: Vec<char> = text[1..].chars().collect();
        let mut k = 0;
        while k < cluster.len() {
            let c = cluster[k];
            k += 1;
            match c {
                'l' => out.maxlevels = Some(0),
                'f' => out.force = true,
                'q' => out.quiet += 1,
                'b' => out.legacy = true,
                'h' => return Parsed::Delegate("help"),
                'r' | 'd' | 's' | 'p' | 'x' | 'i' | 'j' | 'o' | 'e' => {
                    let value = if k < cluster.len() {
                        let rest: String = cluster[k..].iter().collect();
                        OsString::from(rest)
                    } else {
                        match take_value(args, &mut i) {
                            Some(v) => v,
                            None => return Parsed::Delegate("missing value"),
                        }
                    };
                    if let Err(why) = apply_value(&mut out, c, value, dialect) {
                        return Parsed::Delegate(why);
                    }
                    k = cluster.len();
                }
                _ => return Parsed::Delegate("unknown short option"),
            }
        }
    }
    if positional_groups > 1 {
        return Parsed::Delegate("positionals split by options");
    }
    // The checks compileall's main() makes after parsing (parser.error → exit 2).
    let levels = out.opt_levels.as_ref().map_or(1, Vec::len);
    if out.hardlink_dupes && levels == 1 {
        return Parsed::Delegate("--hardlink-dupes with one level");
    }
    if out.ddir.is_some() && (out.stripdir.is_some() || out.prependdir.is_some()) {
        return Parsed::Delegate("-d with -s or -p");
    }
    if out.workers < 0 {
        return Parsed::Delegate("negative -j");
    }
    if out.limit_sl_dest.as_ref().is_some_and(|d| d.is_empty()) {
        out.limit_sl_dest = None;
    }
    Parsed::Run(Box::new(out))
}

fn take_value(args: &[OsString], i: &mut usize) -> Option<OsString> {
    let v = args.get(*i)?;
    let b = v.as_bytes();
    if b.starts_with(b"-") && b != b"-" && !is_negative_number(b) {
        return None;
    }
    *i += 1;
    Some(v.clone())
}

/// argparse treats `-1`, `-2.5` as positionals when no option looks like a number.
fn is_negative_number(b: &[u8]) -> bool {
    b.len() > 1
        && b[0] == b'-'
        && b[1..].iter().all(|c| c.is_ascii_digit() || *c == b'.')
        && b[1..].iter().filter(|c| **c == b'.').count() <= 1
        && b[1..].iter().any(u8::is_ascii_digit)
}

/// Python's `int()` for the plain forms; anything fancier is left to Python.
fn python_int(v: &OsStr) -> Result<i64, &'static str> {
    let s = v.to_str().ok_or("non-UTF-8 integer")?.trim();
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err("not a plain integer");
    }
    s.parse::<i64>().map_err(|_| "integer out of range")
}

fn apply_value(
    out: &mut CompileallArgs,
    option: char,
    value: OsString,
    dialect: Dialect,
) -> Result<(), &'static str> {
    match option {
        'r' => out.recursion = Some(python_int(&value)?),
        'd' => out.ddir = Some(value),
        'x' => out.rx = Some(value),
        'i' => out.flist = Some(value),
        'j' => out.workers = python_int(&value)?,
        's' | 'p' | 'o' | 'e' if !dialect.has_39_options => {
            return Err("option not in this compileall")
        }
        's' => out.stripdir = Some(value),
        'p' => out.prependdir = Some(value),
        'e' => out.limit_sl_dest = Some(value),
        'o' => {
            let level = python_int(&value)?;
            if !(-1..=2).contains(&level) {
                return Err("optimization level outside -1..2");
            }
            out.opt_levels.get_or_insert_with(Vec::new).push(level);
        }
        'M' => {
            let mode = value
                .to_str()
                .and_then(InvalidationMode::parse)
                .ok_or("bad invalidation mode")?;
            out.invalidation_mode = Some(mode);
        }
        _ => return Err("unknown option"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Dialect = Dialect {
        has_39_options: true,
    };

    fn p(args: &[&str]) -> Parsed {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>(), D)
    }

    fn run(args: &[&str]) -> CompileallArgs {
        match p(args) {
            Parsed::Run(a) => *a,
            Parsed::Delegate(why) => panic!("delegated {args:?}: {why}"),
        }
    }

    #[test]
    fn clusters_values_and_long_prefixes() {
        let a = run(&[
            "-lfqq",
            "-r2",
            "-o",
            "1",
            "-o2",
            "--work=0",
            "--inv",
            "checked-hash",
            "pkg",
            "x.py",
        ]);
        assert_eq!(a.maxlevels, Some(0));
        assert!(a.force);
        assert_eq!(a.quiet, 2);
        assert_eq!(a.recursion, Some(2));
        assert_eq!(a.opt_levels, Some(vec![1, 2]));
        assert_eq!(a.workers, 0);
        assert_eq!(a.invalidation_mode, Some(InvalidationMode::CheckedHash));
        assert_eq!(a.dests, vec![OsString::from("pkg"), OsString::from("x.py")]);
    }

    #[test]
    fn usage_errors_are_delegated() {
        for bad in [
            &["-d", "x", "-s", "y", "dir"][..],
            &["--hardlink-dupes", "dir"],
            &["--bogus"],
            &["-Z"],
            &["-r"],
            &["-r", "x"],
            &["a", "-q", "b"],
            &["--h"],
            &["-h"],
            &["--invalidation-mode", "nope"],
            &["-j", "-1"],
        ] {
            assert!(
                matches!(p(bad), Parsed::Delegate(_)),
                "{bad:?} should be delegated"
            );
        }
    }

    #[test]
    fn double_dash_and_dash_are_positional() {
        let a = run(&["-q", "--", "-weird", "-"]);
        assert_eq!(a.dests, vec![OsString::from("-weird"), OsString::from("-")]);
    }

    #[test]
    fn python_38_lacks_the_39_options() {
        let d38 = Dialect {
            has_39_options: false,
        };
        let args: Vec<OsString> = ["-o", "1", "x"].iter().map(OsString::from).collect();
        assert!(matches!(parse(&args, d38), Parsed::Delegate(_)));
    }
}
