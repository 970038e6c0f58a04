//! Reloading: watch the files' directories (notify) and the kv keys, merge again on a change,
//! swap in a good value (arc-swap), keep the old one on a bad one; tell watchers either way.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use notify::Watcher;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{env_variant, merge, Shared};
use crate::error::{Error, Result};

/// Quiet time after a file event before merging, so a file written in several steps is read whole.
const SETTLE: Duration = Duration::from_millis(50);

/// Changes of a [`Config`](super::Config): `Ok(new value)` or `Err(why a change was rejected)`.
pub struct ConfigWatch<T> {
    inner: Pin<Box<dyn Stream<Item = Result<Arc<T>>> + Send>>,
}

impl<T: Send + Sync + 'static> ConfigWatch<T> {
    pub(super) fn new(rx: broadcast::Receiver<std::result::Result<Arc<T>, String>>) -> Self {
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(Ok(v)) => return Some((Ok(v), rx)),
                    Ok(Err(e)) => return Some((Err(Error::config(e)), rx)),
                    // a slow reader skips to the newest; `Config::get` has the current value anyway
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        ConfigWatch { inner: Box::pin(stream) }
    }
}

impl<T> Stream for ConfigWatch<T> {
    type Item = Result<Arc<T>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<T> std::fmt::Debug for ConfigWatch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigWatch")
    }
}

/// Merges again; swaps in and announces a value that differs, announces an error.
pub(super) async fn apply<T>(shared: &Shared<T>) -> Result<Arc<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    match merge(&shared.layers).await {
        Ok(value) => {
            let value = Arc::new(value);
            let old = shared.current.load_full();
            let same =
                serde_json::to_value(&*old).ok().zip(serde_json::to_value(&*value).ok()).is_some_and(|(a, b)| a == b);
            if !same {
                shared.current.store(value.clone());
                let _ = shared.updates.send(Ok(value.clone()));
            }
            Ok(value)
        }
        Err(e) => {
            tracing::warn!("configuration change rejected, keeping the old value: {e}");
            let _ = shared.updates.send(Err(e.message().unwrap_or_default().to_string()));
            Err(e)
        }
    }
}

/// Starts watching; the task ends when `stop` fires or is dropped (the last `Config` handle went).
pub(super) async fn start<T>(shared: Arc<Shared<T>>, mut stop: oneshot::Receiver<()>) -> Result<()>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let layers = &shared.layers;
    let mut paths: HashSet<PathBuf> = HashSet::new();
    for f in &layers.files {
        let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        paths.insert(env_variant(&f, &layers.environment));
        paths.insert(f);
    }
    let (tx, mut files_changed) = mpsc::unbounded_channel::<()>();
    let watched = paths.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() && event.paths.iter().any(|p| watched.contains(p)) {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| Error::config(format!("cannot watch the config files: {e}")))?;
    let dirs: HashSet<PathBuf> = paths.iter().filter_map(|p| p.parent().map(PathBuf::from)).collect();
    for dir in dirs {
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| Error::config(format!("cannot watch {}: {e}", dir.display())))?;
    }
    let mut kv_changes = match &layers.kv {
        Some((kv, key)) => {
            let keys = [key.clone(), format!("{key}.{}", layers.environment)];
            let w = kv.watch(key).await?;
            Some(w.filter(move |c| {
                futures::future::ready(c.as_ref().map_or(true, |c| keys.iter().any(|k| k == c.key())))
            }))
        }
        None => None,
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                Some(()) = files_changed.recv() => {
                    // let the writer finish: wait until the events stop for a moment
                    while let Ok(Some(())) = tokio::time::timeout(SETTLE, files_changed.recv()).await {}
                }
                Some(change) = next(&mut kv_changes) => {
                    if let Err(e) = change {
                        tracing::warn!("config kv watch failed; kv changes no longer reload: {e}");
                        kv_changes = None;
                        continue;
                    }
                }
            }
            let _ = apply(&shared).await;
        }
    });
    Ok(())
}

async fn next<S: Stream + Unpin>(s: &mut Option<S>) -> Option<S::Item> {
    match s {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}
