//! Paths a user gave that are not there: the name probably meant.

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
    let name = name.to_string_lossy();
    let closest = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|other| (strsim::normalized_levenshtein(&name, &other), other))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, other)) => format!("; did you mean {}?", parent.join(other).display()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            near_miss(&dir.path().join("lake/profiles.parquet")),
            format!(
                " (nor does its folder {})",
                dir.path().join("lake").display()
            )
        );
    }
}
