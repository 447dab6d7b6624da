//! [`CgroupRoot`]: nebula's own cgroup, which holds leaves and never processes.

use std::path::Path;
use std::sync::Arc;

use rustix::fs::{Mode, mkdirat};
use rustix::io::Errno;

use super::controller::Controller;
use super::error::CgroupError;
use super::fs::verify_cgroup2;
use super::fs::{CgroupDir, validate_name};
use super::leaf::Leaf;

/// nebula's root cgroup (e.g. `/sys/fs/cgroup/nebula`): the parent of one [`Leaf`] per context.
///
/// It holds no processes itself, because a cgroup that enables controllers for its children
/// may not have processes of its own ("no internal processes", cgroup-v2.rst). Dropping it
/// closes its fd and leaves the directory in place, since other supervisors may share it; use
/// [`CgroupRoot::remove`] to delete it once its leaves are gone.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: Arc<CgroupDir>,
    controllers: Vec<Controller>,
}

impl CgroupRoot {
    /// Opens `<parent>/<name>`, creating it when missing, and enables `controllers` for its
    /// leaves.
    ///
    /// `parent` is a cgroup2 directory: the mount (`/sys/fs/cgroup` on a cgroup v2 host or in
    /// a VM) or a delegated cgroup. The controllers are enabled top-down: in the parent's
    /// `cgroup.subtree_control` first, then in the root's own. Controllers enabled already are
    /// left alone. Only the mount root may hold processes while doing this; any other parent
    /// must have moved its processes into a leaf first.
    ///
    /// # Errors
    ///
    /// * [`CgroupError::NotCgroup2`] when `parent` is not on cgroup2 (nothing is created then);
    /// * [`CgroupError::InvalidName`] for a name that is not one directory name;
    /// * [`CgroupError::ControllerUnavailable`] naming the controller and the parent's
    ///   `cgroup.controllers` when the parent is not offered it;
    /// * [`CgroupError::EnableController`] naming the controller and the
    ///   `cgroup.subtree_control` that refused it (`EBUSY`: internal processes);
    /// * [`CgroupError::RootHasProcesses`] when the root holds processes;
    /// * [`CgroupError::CreateDir`], [`CgroupError::OpenDir`], [`CgroupError::Read`].
    pub fn open(
        parent: impl AsRef<Path>,
        name: &str,
        controllers: &[Controller],
    ) -> Result<CgroupRoot, CgroupError> {
        let parent = parent.as_ref();
        validate_name(name)?;
        verify_cgroup2(parent)?;
        let pdir = CgroupDir::open(parent)?;
        enable_controllers(&pdir, controllers)?;
        match mkdirat(pdir.fd(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(CgroupError::CreateDir {
                    path: pdir.file_path(name),
                    source: e.into(),
                });
            }
        }
        let dir = pdir.open_child(name)?;
        let procs = dir.read("cgroup.procs")?;
        let count = procs.split_whitespace().count();
        if count > 0 {
            return Err(CgroupError::RootHasProcesses {
                path: dir.file_path("cgroup.procs"),
                count,
            });
        }
        enable_controllers(&dir, controllers)?;
        let mut controllers = controllers.to_vec();
        controllers.sort();
        controllers.dedup();
        Ok(CgroupRoot {
            dir: Arc::new(dir),
            controllers,
        })
    }

    /// The root's directory, e.g. `/sys/fs/cgroup/nebula`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The controllers this root was asked to enable for its leaves (all of them are).
    pub fn controllers(&self) -> &[Controller] {
        &self.controllers
    }

    /// The controllers enabled for the leaves right now (`cgroup.subtree_control`), by
    /// kernel name.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`].
    pub fn enabled_controllers(&self) -> Result<Vec<String>, CgroupError> {
        Ok(self
            .dir
            .read("cgroup.subtree_control")?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// Creates the leaf `name` for one context. The returned [`Leaf`] owns the directory:
    /// dropping it kills its processes and removes it.
    ///
    /// # Errors
    ///
    /// [`CgroupError::LeafExists`] when a cgroup of that name exists (names must be unique);
    /// [`CgroupError::InvalidName`]; [`CgroupError::CreateDir`]; [`CgroupError::OpenDir`].
    pub fn create_leaf(&self, name: &str) -> Result<Leaf, CgroupError> {
        validate_name(name)?;
        match mkdirat(self.dir.fd(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(CgroupError::LeafExists {
                    path: self.dir.file_path(name),
                });
            }
            Err(e) => {
                return Err(CgroupError::CreateDir {
                    path: self.dir.file_path(name),
                    source: e.into(),
                });
            }
        }
        match self.dir.open_child(name) {
            Ok(dir) => Ok(Leaf::new(dir, name.to_owned(), Arc::clone(&self.dir), true)),
            Err(e) => {
                let _ = rustix::fs::unlinkat(self.dir.fd(), name, rustix::fs::AtFlags::REMOVEDIR);
                Err(e)
            }
        }
    }

    /// Opens an existing leaf, e.g. for `nebula-ctl stats ID`. The returned [`Leaf`] does
    /// **not** own the directory: dropping it only closes fds. Call [`Leaf::kill`],
    /// [`Leaf::wait_empty`] and [`Leaf::remove`] to tear it down, or [`Leaf::adopt`] to make
    /// drop do so.
    ///
    /// # Errors
    ///
    /// [`CgroupError::InvalidName`]; [`CgroupError::OpenDir`] (`ENOENT`: no such leaf).
    pub fn open_leaf(&self, name: &str) -> Result<Leaf, CgroupError> {
        validate_name(name)?;
        let dir = self.dir.open_child(name)?;
        Ok(Leaf::new(
            dir,
            name.to_owned(),
            Arc::clone(&self.dir),
            false,
        ))
    }

    /// The names of the leaves that exist now (the child directories), sorted.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`] when the directory cannot be listed.
    pub fn leaves(&self) -> Result<Vec<String>, CgroupError> {
        let err = |source| CgroupError::Read {
            path: self.path().to_owned(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path()).map_err(err)? {
            let entry = entry.map_err(err)?;
            if entry.file_type().map_err(err)?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes the root directory. It must have no leaves left (drop or remove them first).
    ///
    /// # Errors
    ///
    /// [`CgroupError::Remove`] (`EBUSY` while leaves or processes remain).
    pub fn remove(self) -> Result<(), CgroupError> {
        let path = self.path().to_owned();
        drop(self);
        std::fs::remove_dir(&path).map_err(|source| CgroupError::Remove { path, source })
    }
}

/// Enables `controllers` in `dir/cgroup.subtree_control`, one write per controller so that an
/// error names the one refused. Controllers enabled already are skipped (no write at all).
fn enable_controllers(dir: &CgroupDir, controllers: &[Controller]) -> Result<(), CgroupError> {
    let enabled = dir.read("cgroup.subtree_control")?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let wanted: Vec<Controller> = controllers
        .iter()
        .copied()
        .filter(|c| !enabled.contains(&c.name()))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let available = dir.read("cgroup.controllers")?;
    let available: Vec<&str> = available.split_whitespace().collect();
    for c in wanted {
        if !available.contains(&c.name()) {
            return Err(CgroupError::ControllerUnavailable {
                controller: c,
                path: dir.file_path("cgroup.controllers"),
            });
        }
        dir.write_raw(
            "cgroup.subtree_control",
            format!("+{}", c.name()).as_bytes(),
        )
        .map_err(|source| CgroupError::EnableController {
            controller: c,
            path: dir.file_path("cgroup.subtree_control"),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
impl CgroupRoot {
    /// A root over any directory (a temp dir with fake interface files), unchecked.
    pub(crate) fn from_dir_for_test(path: &Path, controllers: &[Controller]) -> CgroupRoot {
        CgroupRoot {
            dir: Arc::new(CgroupDir::open(path).unwrap()),
            controllers: controllers.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fs::tests::TempDir;
    use super::*;

    #[test]
    fn open_refuses_a_plain_directory_and_creates_nothing() {
        let t = TempDir::new("root");
        let e = CgroupRoot::open(&t.0, "nebula", &Controller::ALL).unwrap_err();
        assert!(matches!(e, CgroupError::NotCgroup2 { .. }), "{e}");
        assert!(!t.0.join("nebula").exists());
        let e = CgroupRoot::open(&t.0, "a/b", &Controller::ALL).unwrap_err();
        assert!(matches!(e, CgroupError::InvalidName { .. }), "{e}");
    }

    #[test]
    fn enable_skips_enabled_and_names_unavailable() {
        // A fake cgroup directory: regular files stand in for the interface files.
        let t = TempDir::new("root");
        std::fs::write(t.0.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        std::fs::write(t.0.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
        let d = CgroupDir::open(&t.0).unwrap();
        enable_controllers(&d, &[Controller::Memory, Controller::Pids]).unwrap();
        // nothing written when everything is enabled
        assert_eq!(
            std::fs::read_to_string(t.0.join("cgroup.subtree_control")).unwrap(),
            "memory pids\n"
        );
        let e = enable_controllers(&d, &[Controller::Io]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "controller \"io\" is not available in {}; the parent must enable it in its \
                 cgroup.subtree_control first (nebula-ctl probe shows why)",
                t.0.join("cgroup.controllers").display()
            )
        );
    }

    #[test]
    fn leaves_lists_directories_only() {
        let t = TempDir::new("root");
        std::fs::write(t.0.join("cgroup.procs"), "").unwrap();
        std::fs::create_dir(t.0.join("ctx-2")).unwrap();
        std::fs::create_dir(t.0.join("ctx-1")).unwrap();
        let r = CgroupRoot::from_dir_for_test(&t.0, &[]);
        assert_eq!(r.leaves().unwrap(), ["ctx-1", "ctx-2"]);
        let e = r.create_leaf("ctx-1").unwrap_err();
        assert!(matches!(e, CgroupError::LeafExists { .. }), "{e}");
        let l = r.create_leaf("ctx-3").unwrap();
        assert!(t.0.join("ctx-3").is_dir());
        // Drop of an owned leaf removes it (no cgroup.events here: nothing to wait for).
        drop(l);
        assert!(!t.0.join("ctx-3").exists());
        let l = r.open_leaf("ctx-1").unwrap();
        drop(l); // not owned: stays
        assert!(t.0.join("ctx-1").is_dir());
        assert!(r.open_leaf("ctx-9").is_err());
    }
}
