//! A service's configuration loaded the way its binary loads it, from a test's own variables
//! (never the process environment), then checked.

use std::collections::HashMap;

use serde::{de::DeserializeOwned, Serialize};

/// `defaults` overlaid by `pairs` through `aliases` (and `RAKUDA__…` keys), then `validate`d;
/// `fixed` are variables set unless `pairs` sets them (e.g. a `REDIS_URL` a service needs).
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: &T,
    aliases: &[(&str, &str)],
    fixed: &[(&str, &str)],
    pairs: &[(&str, &str)],
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<T, String> {
    let mut env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for (k, v) in fixed {
        env.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    let c = service_kit::load_config(defaults, aliases, &env).map_err(|e| e.to_string())?;
    validate(&c).map(|_| c)
}
