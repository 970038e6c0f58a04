//! YAML files for figment, parsed by `serde_norway` (figment's own `yaml` feature pulls in the
//! deprecated `serde_yaml`).

use serde::de::DeserializeOwned;

/// The YAML format as a figment provider: `Yaml::file("app.yaml")`.
///
/// ```
/// use figment::{Figment, providers::Format};
/// use micro::config::Yaml;
///
/// #[derive(serde::Deserialize)] struct S { port: u16 }
/// let s: S = Figment::from(Yaml::string("port: 8080")).extract().unwrap();
/// assert_eq!(s.port, 8080);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Yaml;

impl figment::providers::Format for Yaml {
    type Error = serde_norway::Error;

    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        serde_norway::from_str(string)
    }
}
