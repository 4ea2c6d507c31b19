//! cgroups that tests and the demo make under the machine's cgroup2 hierarchy, laid out as
//! container runtimes name theirs.

use std::path::{Path, PathBuf};

/// The cgroup2 mount point in `/proc/mounts` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid host), if there is one.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .and_then(|f| f.get(1).map(PathBuf::from))
}

/// A command that joins the cgroup `dir` and then execs `program` with `args`, through `sh`:
/// the process is in the cgroup before the program opens anything, as a container's process
/// is (a socket belongs to the cgroup of the process that opened it).
pub fn command_in(dir: &Path, program: &std::ffi::OsStr) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", r#"echo $$ > "$1" && shift && exec "$@""#, "sh"])
        .arg(dir.join("cgroup.procs"))
        .arg(program);
    cmd
}

/// Remove the cgroup `top` and every cgroup below it, deepest first (a cgroup can only be
/// removed once it has no children and no processes; kill those first). Errors are ignored:
/// this runs in `Drop`.
pub fn remove_tree(top: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        dirs.push(d);
    }
    // children were pushed after their parents
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}
