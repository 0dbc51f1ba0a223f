//! Names and paths a user gave that are not there: the one probably meant.

use std::path::Path;

/// For a path that does not exist: the name beside it that was probably meant (`; did
/// you mean data/profiles.parquet?`), or that its folder is missing too.
pub fn near_miss(path: &Path) -> String {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return String::new();
    };
    let folder = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return if folder.exists() {
            String::new()
        } else {
            format!(" (nor does its folder {})", parent.display())
        };
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match closest(&name.to_string_lossy(), names.iter().map(String::as_str)) {
        Some(other) => format!("; did you mean {}?", parent.join(other).display()),
        None => String::new(),
    }
}

/// What to add to "`path` does not exist": what a shell would have replaced in it
/// ([`unexpanded`]), else the name probably meant ([`near_miss`]).
pub fn missing(path: &Path) -> String {
    unexpanded(path).map_or_else(|| near_miss(path), |advice| format!("; {advice}"))
}

/// What a shell would have replaced in `path` but pipeline does not: a `~` for the home
/// folder, a `$NAME` without braces (only `${NAME}` is replaced in the file). The advice
/// to write instead, if `path` holds one.
pub fn unexpanded(path: &Path) -> Option<String> {
    path.components().find_map(|c| {
        let part = c.as_os_str().to_str()?;
        if part == "~" {
            return Some(
                "`~` is not your home folder here: write `${HOME}/...` or the full path".into(),
            );
        }
        // The name a shell would read: up to the first character no name has.
        let name: String = part
            .strip_prefix('$')?
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        crate::interpolate::is_var_name(&name)
            .then(|| format!("`${name}` is not replaced here: write `${{{name}}}`"))
    })
}

/// Of `candidates`, the one `name` was probably meant to be (a letter missing, added or
/// swapped, or another case), if one is close enough: one edit away, or at least 70%
/// alike. Not `name` itself.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let written = name;
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != written)
        .map(|c| {
            let other = c.to_lowercase();
            let edits = strsim::damerau_levenshtein(&name, &other);
            let alike = strsim::normalized_damerau_levenshtein(&name, &other);
            (edits, alike, c)
        })
        .filter(|(edits, alike, _)| (*edits <= 1 && name.chars().count() > 1) || *alike >= 0.7)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

/// ` (did you mean `x`?)` for [`closest`], or nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates).map_or(String::new(), |c| format!(" (did you mean `{c}`?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_shell_would_replace_is_named() {
        let said = |p: &str| unexpanded(Path::new(p));
        assert_eq!(
            said("~/state").unwrap(),
            "`~` is not your home folder here: write `${HOME}/...` or the full path"
        );
        assert_eq!(
            said("$STATE_ROOT/pipeline").unwrap(),
            "`$STATE_ROOT` is not replaced here: write `${STATE_ROOT}`"
        );
        assert_eq!(
            said("/data/$HOME").unwrap(),
            "`$HOME` is not replaced here: write `${HOME}`"
        );
        for fine in [
            "state",
            "/srv/~backup/x",
            "data/$1",
            "a$b/c",
            "s3://bucket/state",
        ] {
            assert_eq!(said(fine), None, "{fine}");
        }
    }

    #[test]
    fn a_missing_path_names_the_file_probably_meant() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/profiles.parquet"), b"PAR1").unwrap();
        std::fs::write(dir.path().join("data/orders.parquet"), b"PAR1").unwrap();
        let data = dir.path().join("data");
        assert_eq!(
            near_miss(&data.join("profile.parquet")),
            format!(
                "; did you mean {}?",
                data.join("profiles.parquet").display()
            )
        );
        assert_eq!(
            near_miss(&dir.path().join("dta")),
            format!("; did you mean {}?", data.display())
        );
        assert_eq!(near_miss(&data.join("customers.parquet")), "");
        assert_eq!(
            did_you_mean("firstname", ["email", "first_name", "last_name"]),
            " (did you mean `first_name`?)"
        );
        assert_eq!(did_you_mean("country", ["email", "first_name"]), "");
        // Short names one edit away, and names in another case.
        assert_eq!(closest("sgg", ["sg", "marketing"]), Some("sg"));
        assert_eq!(closest("vp", ["vip", "high_value"]), Some("vip"));
        assert_eq!(closest("EMAIL", ["email", "first_name"]), Some("email"));
        assert_eq!(closest("x", ["y"]), None);
        assert_eq!(
            near_miss(&dir.path().join("lake/profiles.parquet")),
            format!(
                " (nor does its folder {})",
                dir.path().join("lake").display()
            )
        );
    }
}
