//! Hot reload: watches the scripts folder and the config file's folder (folders, not files: a
//! rename-save silences a file watch), debounces editor bursts into one change, then reconciles.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::event::{AccessKind, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Keeps watching while alive; dropping it stops the reload thread.
pub struct ReloadWatcher {
    watcher: Option<RecommendedWatcher>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ReloadWatcher {
    fn drop(&mut self) {
        // Dropping the watcher closes the channel, which ends the thread.
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a changed path means to us.
#[derive(Debug, PartialEq, Eq)]
enum PathRole {
    Script,
    Config,
    /// In the scripts folder but not a script (swap file, backup, directory...).
    Junk(&'static str),
    Unrelated,
}

fn classify(path: &Path, scripts_dir: &Path, config_path: &Path) -> PathRole {
    if path == config_path {
        return PathRole::Config;
    }
    if path.parent() != Some(scripts_dir) {
        return PathRole::Unrelated;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return PathRole::Junk("editor swap or backup file");
    }
    if !name.ends_with(".rhai") {
        return PathRole::Junk("not a .rhai file");
    }
    if path.is_dir() {
        return PathRole::Junk("a directory");
    }
    PathRole::Script
}

/// Starts watching; reload lines go to `dispatch` (the script log).
/// What a burst of changes asks for: `true` when the config file was among them.
pub type OnChange = Box<dyn Fn(bool) + Send>;

pub fn watch(
    scripts_dir: &Path,
    config_path: &Path,
    debounce: Duration,
    dispatch: tracing::Dispatch,
    on_change: OnChange,
) -> Result<ReloadWatcher, WatchError> {
    let scripts_dir = absolute(scripts_dir);
    let config_path = absolute(config_path);
    let config_dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (sender, receiver) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = sender.send(event);
    })
    .map_err(|source| WatchError {
        path: scripts_dir.clone(),
        source,
    })?;
    for dir in [&scripts_dir, &config_dir] {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
    }
    let thread = std::thread::Builder::new()
        .name("gatehouse-reload".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                reload_loop(&on_change, &receiver, debounce, &scripts_dir, &config_path);
            })
        })
        .expect("spawning the reload thread");
    Ok(ReloadWatcher {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

fn reload_loop(
    on_change: &OnChange,
    receiver: &mpsc::Receiver<notify::Result<notify::Event>>,
    debounce: Duration,
    scripts_dir: &Path,
    config_path: &Path,
) {
    let mut junk_reported = HashSet::new();
    let mut relevant = |event: notify::Result<notify::Event>| -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(target: "server", "file watch error: {error}; rescanning");
                return true;
            }
        };
        if matches!(
            event.kind,
            EventKind::Access(AccessKind::Open(_) | AccessKind::Read | AccessKind::Any)
        ) {
            return false;
        }
        let mut any = false;
        for path in &event.paths {
            match classify(path, scripts_dir, config_path) {
                PathRole::Script | PathRole::Config => any = true,
                PathRole::Junk(why) => {
                    if junk_reported.insert(path.clone()) {
                        tracing::info!(target: "server", "ignoring {}: {why}", path.display());
                    }
                }
                PathRole::Unrelated => {}
            }
        }
        any
    };
    loop {
        // Wait for the first relevant event of a burst.
        let mut config_touched = false;
        match receiver.recv() {
            Ok(event) => {
                let touches_config = touches(&event, scripts_dir, config_path);
                if !relevant(event) {
                    continue;
                }
                config_touched |= touches_config;
            }
            Err(_) => return,
        }
        // Then wait until the burst is over: `debounce` without a relevant event.
        loop {
            match receiver.recv_timeout(debounce) {
                Ok(event) => {
                    config_touched |= touches(&event, scripts_dir, config_path);
                    relevant(event);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        on_change(config_touched);
    }
}

fn touches(event: &notify::Result<notify::Event>, scripts_dir: &Path, config_path: &Path) -> bool {
    event.as_ref().is_ok_and(|e| {
        e.paths
            .iter()
            .any(|p| classify(p, scripts_dir, config_path) == PathRole::Config)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_editor_files() {
        let dir = Path::new("/srv/scripts");
        let config = Path::new("/srv/config/gatehouse.toml");
        assert_eq!(
            classify(Path::new("/srv/scripts/a.rhai"), dir, config),
            PathRole::Script
        );
        assert!(matches!(
            classify(Path::new("/srv/scripts/.a.rhai.swp"), dir, config),
            PathRole::Junk(_)
        ));
        assert!(matches!(
            classify(Path::new("/srv/scripts/a.rhai~"), dir, config),
            PathRole::Junk(_)
        ));
        assert!(matches!(
            classify(Path::new("/srv/scripts/notes.txt"), dir, config),
            PathRole::Junk(_)
        ));
        assert_eq!(classify(config, dir, config), PathRole::Config);
        assert_eq!(
            classify(Path::new("/srv/config/users.toml"), dir, config),
            PathRole::Unrelated
        );
    }
}
