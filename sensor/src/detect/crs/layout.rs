//! Finds the configuration files of an OWASP CRS tree in the order a web server loads them.

use std::fs;
use std::path::{Path, PathBuf};

use super::parse::ParseError;

/// Where Debian's `modsecurity-crs` package installs the rules.
const DEBIAN_RULES_ROOT: &str = "/usr/share/modsecurity-crs";

/// Where Debian's `modsecurity-crs` package keeps the setup of the rules it installs under
/// `/usr/share/modsecurity-crs` (see its `owasp-crs.load`).
pub(super) const DEBIAN_SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";

/// Exclusion files that Debian's `owasp-crs.load` includes (if present) right before and
/// right after the rules; they sit next to the setup file.
const DEBIAN_BEFORE: &str = "REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf";
const DEBIAN_AFTER: &str = "RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf";

/// The files of a CRS tree: parse `setup` first, then `files` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrsLayout {
    /// `crs-setup.conf` (or its `.example`), which sets the paranoia level and thresholds.
    pub setup: PathBuf,
    /// Plugin configs, plugin `-before` files, the rules, plugin `-after` files.
    pub files: Vec<PathBuf>,
    /// What the operator should know about the choice (a setup file taken from elsewhere).
    pub warnings: Vec<String>,
}

/// Finds the files of the CRS tree at `crs_dir`, in load order.
///
/// - CRS 4.x release tree: `crs_dir/crs-setup.conf` (else `crs-setup.conf.example`), then
///   `plugins/*-config.conf`, `plugins/*-before.conf`, `rules/*.conf`, `plugins/*-after.conf`
///   (each group sorted by name; `plugins/` is optional).
/// - Debian's `modsecurity-crs` 3.3.4: `crs_dir` is `/usr/share/modsecurity-crs`, which holds
///   `rules/` but no setup file; then the setup is `/etc/modsecurity/crs/crs-setup.conf` when it
///   exists.
/// - `crs_dir` may also be the `rules/` directory itself (the setup is then looked for in its
///   parent, then in the Debian location).
///
/// `setup_override` replaces the setup file search. When the setup file's directory holds
/// Debian's `REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf` / `RESPONSE-999-...-AFTER-CRS.conf`
/// (and is not the rules directory), they are loaded right before / after the rules, as
/// Debian's `owasp-crs.load` does. A tree without rule files or setup is an error that says
/// what was looked for.
pub fn discover(crs_dir: &Path, setup_override: Option<&Path>) -> Result<CrsLayout, ParseError> {
    let (root, rules_dir) = if crs_dir.join("rules").is_dir() {
        (crs_dir.to_path_buf(), crs_dir.join("rules"))
    } else {
        let parent = crs_dir.parent().unwrap_or(crs_dir).to_path_buf();
        (parent, crs_dir.to_path_buf())
    };
    let rules = list(&rules_dir, "", ".conf")?;
    if rules.is_empty() {
        return Err(ParseError::Layout(format!(
            "{}: no CRS rules found (looked for {}/rules/*.conf and {}/*.conf)",
            crs_dir.display(),
            crs_dir.display(),
            crs_dir.display()
        )));
    }
    let mut warnings = Vec::new();
    let setup = match setup_override {
        Some(path) => path.to_path_buf(),
        None => {
            let candidates = [
                root.join("crs-setup.conf"),
                root.join("crs-setup.conf.example"),
                PathBuf::from(DEBIAN_SETUP),
            ];
            match candidates.iter().find(|p| p.is_file()) {
                Some(found) => {
                    if found.as_path() == Path::new(DEBIAN_SETUP)
                        && root != Path::new(DEBIAN_RULES_ROOT)
                    {
                        // a downloaded tree without its setup would silently run with the
                        // settings Debian wrote for its own CRS version
                        warnings.push(format!(
                            "{} has no crs-setup.conf or crs-setup.conf.example: using Debian's \
                             {DEBIAN_SETUP}, written for the CRS version Debian installs; give \
                             the tree's own setup with --crs-setup (detect.crs_setup)",
                            root.display()
                        ));
                    }
                    found.clone()
                }
                None => {
                    let looked: Vec<String> =
                        candidates.iter().map(|p| p.display().to_string()).collect();
                    return Err(ParseError::Layout(format!(
                        "{}: no CRS setup file found (looked for {})",
                        crs_dir.display(),
                        looked.join(", ")
                    )));
                }
            }
        }
    };
    let setup_dir = setup.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside_setup = |name: &str| {
        let path = setup_dir.join(name);
        (setup_dir != rules_dir && path.is_file()).then_some(path)
    };
    let plugins = root.join("plugins");
    let mut files = list(&plugins, "", "-config.conf")?;
    files.extend(list(&plugins, "", "-before.conf")?);
    files.extend(beside_setup(DEBIAN_BEFORE));
    files.extend(rules);
    files.extend(beside_setup(DEBIAN_AFTER));
    files.extend(list(&plugins, "", "-after.conf")?);
    Ok(CrsLayout {
        setup,
        files,
        warnings,
    })
}

/// The regular files of `dir` named `{prefix}*{suffix}` (not starting with `.`), sorted by
/// name; a missing directory has none.
fn list(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<PathBuf>, ParseError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(source) => {
            return Err(ParseError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ParseError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with('.')
            && name.len() > prefix.len() + suffix.len()
            && name.starts_with(prefix)
            && name.ends_with(suffix)
            && entry.path().is_file()
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "# test\n").unwrap();
    }

    fn names(paths: &[PathBuf], root: &Path) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn crs4_tree_without_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(&d.join("crs-setup.conf.example"));
        touch(&d.join("rules/REQUEST-911-METHOD-ENFORCEMENT.conf"));
        touch(&d.join("rules/REQUEST-901-INITIALIZATION.conf"));
        touch(&d.join("rules/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf.example"));
        touch(&d.join("rules/unix-shell.data"));
        let layout = discover(d, None).unwrap();
        assert_eq!(layout.setup, d.join("crs-setup.conf.example"));
        assert_eq!(
            names(&layout.files, d),
            [
                "rules/REQUEST-901-INITIALIZATION.conf",
                "rules/REQUEST-911-METHOD-ENFORCEMENT.conf"
            ]
        );
        // crs-setup.conf wins over the example; the rules directory itself is accepted.
        touch(&d.join("crs-setup.conf"));
        let layout = discover(&d.join("rules"), None).unwrap();
        assert_eq!(layout.setup, d.join("crs-setup.conf"));
        assert_eq!(layout.files.len(), 2);
    }

    #[test]
    fn a_tree_without_setup_names_the_fallback_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(&d.join("rules/REQUEST-901-INITIALIZATION.conf"));
        match discover(d, None) {
            // Debian's package is installed here: its setup is used, and said so
            Ok(layout) => {
                assert_eq!(layout.setup, Path::new(DEBIAN_SETUP));
                assert_eq!(layout.warnings.len(), 1, "{:?}", layout.warnings);
                assert!(layout.warnings[0].contains("--crs-setup"));
            }
            Err(e) => {
                assert!(!Path::new(DEBIAN_SETUP).is_file());
                assert!(e.to_string().contains("no CRS setup file found"), "{e}");
            }
        }
        // with the tree's own setup there is nothing to say
        touch(&d.join("crs-setup.conf"));
        assert!(discover(d, None).unwrap().warnings.is_empty());
    }

    #[test]
    fn crs4_tree_with_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(&d.join("crs-setup.conf"));
        touch(&d.join("rules/REQUEST-901-INITIALIZATION.conf"));
        touch(&d.join("rules/RESPONSE-980-CORRELATION.conf"));
        for f in [
            "wordpress-rule-exclusions-before.conf",
            "wordpress-rule-exclusions-config.conf",
            "wordpress-rule-exclusions-after.conf",
            "empty-after.conf",
            "empty-config.conf",
            "empty-before.conf",
            "README.md",
        ] {
            touch(&d.join("plugins").join(f));
        }
        let layout = discover(d, Some(&d.join("custom-setup.conf"))).unwrap();
        assert_eq!(layout.setup, d.join("custom-setup.conf"));
        assert_eq!(
            names(&layout.files, d),
            [
                "plugins/empty-config.conf",
                "plugins/wordpress-rule-exclusions-config.conf",
                "plugins/empty-before.conf",
                "plugins/wordpress-rule-exclusions-before.conf",
                "rules/REQUEST-901-INITIALIZATION.conf",
                "rules/RESPONSE-980-CORRELATION.conf",
                "plugins/empty-after.conf",
                "plugins/wordpress-rule-exclusions-after.conf",
            ]
        );
    }

    #[test]
    fn empty_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = discover(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("no CRS rules found"), "{e}");
        assert!(e.contains("/rules/*.conf"), "{e}");
    }

    #[test]
    fn debian_tree() {
        let crs = Path::new("/usr/share/modsecurity-crs");
        if super::super::without_debian_crs("debian_tree") {
            return;
        }
        let layout = discover(crs, None).unwrap();
        assert_eq!(layout.setup, Path::new(DEBIAN_SETUP));
        let first = layout.files.first().unwrap();
        let last = layout.files.last().unwrap();
        assert_eq!(
            *first,
            Path::new("/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf")
        );
        assert_eq!(
            *last,
            Path::new("/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf")
        );
        assert_eq!(
            layout.files[1],
            crs.join("rules/REQUEST-901-INITIALIZATION.conf")
        );
        let rules = layout.files.iter().filter(|p| p.starts_with(crs)).count();
        let expected = fs::read_dir(crs.join("rules"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".conf")
            })
            .count();
        assert_eq!(rules, expected);
        assert_eq!(discover(&crs.join("rules"), None).unwrap(), layout);
    }
}
