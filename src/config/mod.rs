//! Typed configuration, layered and reloadable: defaults < files (TOML, YAML, JSON) <
//! environment variables < the kv store (the "config service"), for one environment (`dev`,
//! `staging`, `prod`, ...). [figment] does the merge and says where a bad value came from.
//!
//! **Environments.** [`ConfigBuilder::environment`] (default `MICRO_ENV`, else `dev`) picks the
//! namespace: next to each file `app.toml` an `app.<env>.toml` is layered on top when present,
//! and in the kv store the document at `<key>.<env>` is layered on `<key>`.
//!
//! **Environment variables**: `MICRO__DB__URL=...` sets `db.url` (prefix and `__` nesting;
//! change the prefix with [`ConfigBuilder::env_prefix`]).
//!
//! **Reload.** The files' directories and the kv keys are watched; on a change the layers are
//! merged again. A value that fails to parse or to fit `T` is rejected: the old value stays and
//! [`Config::watch`] yields the error; a good one replaces it (readers see it at once through
//! [`Config::get`], an `arc-swap` load) and is yielded.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use micro::config::Config;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Settings { retention_days: u32, greeting: String }
//!
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("cfg-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("app.toml");
//! std::fs::write(&path, "greeting = 'hello'").unwrap();
//! let kv = micro::kv::Kv::open("memory://config-doc").await?;
//! kv.put("config.app.dev", r#"{"retention_days": 7}"#).await?;
//! let config = Config::builder()
//!     .defaults(Settings { retention_days: 30, greeting: "hi".into() })
//!     .file(&path)
//!     .kv(&kv, "config.app")
//!     .environment("dev")
//!     .load()
//!     .await?;
//! assert_eq!(config.get().retention_days, 7);
//! assert_eq!(config.get().greeting, "hello");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use figment::providers::{Env, Format, Json, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::error::{Error, Result};
use crate::kv::{check_key, Kv};

mod reload;
mod yaml;

pub use reload::ConfigWatch;
pub use yaml::Yaml;

/// The environment variable naming the environment: `MICRO_ENV=prod`.
pub const ENV_VAR: &str = "MICRO_ENV";

/// The default prefix of configuration variables: `MICRO__DB__URL` sets `db.url`.
pub const DEFAULT_ENV_PREFIX: &str = "MICRO__";

/// Builds a [`Config`]; every layer is optional.
#[derive(Debug)]
pub struct ConfigBuilder<T> {
    defaults: Option<T>,
    files: Vec<PathBuf>,
    env_prefix: Option<String>,
    kv: Option<(Kv, String)>,
    environment: Option<String>,
    watch: bool,
}

/// A typed, live configuration value: cheap to clone, [`get`](Config::get) is lock-free.
#[derive(Debug)]
pub struct Config<T> {
    shared: Arc<Shared<T>>,
    _stop: Arc<StopOnDrop>,
}

impl<T> Clone for Config<T> {
    fn clone(&self) -> Self {
        Config { shared: self.shared.clone(), _stop: self._stop.clone() }
    }
}

#[derive(Debug)]
struct StopOnDrop(#[allow(dead_code)] oneshot::Sender<()>);

/// What the reload task and the handles share.
#[derive(Debug)]
pub(crate) struct Shared<T> {
    current: ArcSwap<T>,
    updates: broadcast::Sender<std::result::Result<Arc<T>, String>>,
    layers: Layers<T>,
}

/// The sources, kept to merge again on a change.
#[derive(Debug)]
struct Layers<T> {
    defaults: Option<T>,
    files: Vec<PathBuf>,
    env_prefix: String,
    kv: Option<(Kv, String)>,
    environment: String,
}

impl<T> Config<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts a builder.
    pub fn builder() -> ConfigBuilder<T> {
        ConfigBuilder { defaults: None, files: Vec::new(), env_prefix: None, kv: None, environment: None, watch: true }
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// The environment this configuration is for.
    pub fn environment(&self) -> &str {
        &self.shared.layers.environment
    }

    /// The changes from now on: each accepted new value, or the error of a rejected change
    /// (the old value stays).
    pub fn watch(&self) -> ConfigWatch<T> {
        ConfigWatch::new(self.shared.updates.subscribe())
    }

    /// Merges the layers again now (as a change would), returning the new value or the error.
    pub async fn reload(&self) -> Result<Arc<T>> {
        reload::apply(&self.shared).await
    }
}

impl<T> ConfigBuilder<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The lowest layer: a complete value (its `Serialize` form).
    pub fn defaults(mut self, value: T) -> Self {
        self.defaults = Some(value);
        self
    }

    /// A file layer, by extension: `.toml`, `.yaml`/`.yml` or `.json`. It must exist; its
    /// `<stem>.<env>.<ext>` sibling is layered on top when present. Later files win.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_path_buf());
        self
    }

    /// The prefix of configuration variables (default `MICRO__`); `__` separates nesting.
    pub fn env_prefix(mut self, prefix: &str) -> Self {
        self.env_prefix = Some(prefix.to_string());
        self
    }

    /// The top layer: JSON documents at `key` and `key.<env>` in `kv`.
    pub fn kv(mut self, kv: &Kv, key: &str) -> Self {
        self.kv = Some((kv.clone(), key.to_string()));
        self
    }

    /// The environment (`dev`, `staging`, `prod`, or another lowercase name); default
    /// `MICRO_ENV`, else `dev`.
    pub fn environment(mut self, env: &str) -> Self {
        self.environment = Some(env.to_string());
        self
    }

    /// Whether to watch the files and kv keys for changes (default true).
    pub fn watch(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }

    /// Merges the layers; fails with [`crate::ErrorKind::Config`] saying which value and
    /// source are wrong. With watching on, starts the reload task (needs a tokio runtime).
    pub async fn load(self) -> Result<Config<T>> {
        let environment = self
            .environment
            .or_else(|| std::env::var(ENV_VAR).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "dev".to_string());
        if environment.is_empty()
            || !environment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::config(format!(
                "bad environment name {environment:?}: use lowercase letters, digits and '-'"
            )));
        }
        if let Some((_, key)) = &self.kv {
            check_key(key)?;
        }
        for f in &self.files {
            if !f.is_file() {
                return Err(Error::config(format!("config file {} does not exist", f.display())));
            }
            file_provider(f)?;
        }
        let layers = Layers {
            defaults: self.defaults,
            files: self.files,
            env_prefix: self.env_prefix.unwrap_or_else(|| DEFAULT_ENV_PREFIX.to_string()),
            kv: self.kv,
            environment,
        };
        let first = merge(&layers).await?;
        let (updates, _) = broadcast::channel(64);
        let shared = Arc::new(Shared { current: ArcSwap::from_pointee(first), updates, layers });
        let (stop, stopped) = oneshot::channel();
        if self.watch {
            reload::start(shared.clone(), stopped).await?;
        }
        Ok(Config { shared, _stop: Arc::new(StopOnDrop(stop)) })
    }
}

/// `app.toml` → `app.prod.toml`.
fn env_variant(path: &Path, env: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{env}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{env}"),
    };
    path.with_file_name(name)
}

enum FileKind {
    Toml,
    Yaml,
    Json,
}

fn file_provider(path: &Path) -> Result<FileKind> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("toml") => Ok(FileKind::Toml),
        Some("yaml" | "yml") => Ok(FileKind::Yaml),
        Some("json") => Ok(FileKind::Json),
        _ => Err(Error::config(format!("config file {}: use a .toml, .yaml, .yml or .json file", path.display()))),
    }
}

fn merge_file(fig: Figment, path: &Path) -> Result<Figment> {
    Ok(match file_provider(path)? {
        FileKind::Toml => fig.merge(Toml::file_exact(path)),
        FileKind::Yaml => fig.merge(Yaml::file_exact(path)),
        FileKind::Json => fig.merge(Json::file_exact(path)),
    })
}

/// Merges every layer into a `T`.
async fn merge<T: Serialize + DeserializeOwned>(layers: &Layers<T>) -> Result<T> {
    let mut fig = Figment::new();
    if let Some(d) = &layers.defaults {
        fig = fig.merge(Serialized::defaults(d));
    }
    for f in &layers.files {
        fig = merge_file(fig, f)?;
        let variant = env_variant(f, &layers.environment);
        if variant.is_file() {
            fig = merge_file(fig, &variant)?;
        }
    }
    fig = fig.merge(Env::prefixed(&layers.env_prefix).split("__"));
    if let Some((kv, key)) = &layers.kv {
        for k in [key.clone(), format!("{key}.{}", layers.environment)] {
            if let Some(entry) = kv.get(&k).await? {
                let text = entry
                    .as_str()
                    .ok_or_else(|| Error::config(format!("config in kv key {k:?} is not UTF-8 JSON")))?
                    .to_string();
                fig = fig.merge(Json::string(&text));
            }
        }
    }
    fig.extract::<T>().map_err(|e| Error::config(format!("invalid configuration: {}", figment_message(e))))
}

fn figment_message(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}
