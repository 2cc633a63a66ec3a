//! A Lua script run by its SHA1, falling back to its source after a Redis restart (`NOSCRIPT`).

use fred::{
    clients::Client,
    interfaces::LuaInterface,
    types::{scripts::Script, FromValue, Value},
};

/// A Lua script for `EVALSHA`, with its source for the `EVAL` fallback. Services that keep
/// their own data next to the bus (the stats-aggregator's daily hashes, the gateway's
/// notifications) run their scripts with it over [`crate::RedisBus::client`].
#[derive(Clone, Debug)]
pub struct LuaScript {
    script: Script,
    lua: &'static str,
}

impl LuaScript {
    /// A script from its source.
    pub fn new(lua: &'static str) -> Self {
        LuaScript {
            script: Script::from_lua(lua),
            lua,
        }
    }

    /// Runs it with `EVALSHA`, and with `EVAL` when Redis does not have it (it restarted, or
    /// it is another Cluster node than the one it was loaded on).
    pub async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, fred::error::Error> {
        match client
            .evalsha::<R, _, _, _>(self.script.sha1().clone(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => client.eval::<R, _, _, _>(self.lua, keys, args).await,
            other => other,
        }
    }

    /// The script, to load it ahead (`SCRIPT LOAD`).
    pub fn script(&self) -> &Script {
        &self.script
    }
}
