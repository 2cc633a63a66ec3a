//! Notifications in Redis: three scripts over one user's keys, which share the hash tag
//! `{<user>}` so each script is one atomic step on one Cluster slot.

use std::time::Duration;

use event_bus::LuaScript;
use fred::{clients::Client, types::Value};

use super::contract::{Store, StoreError};
use crate::{
    config::IDEMPOTENCY_SECS,
    model::{Created, Marked, Notification, Page, PageQuery, Stored},
};

const CREATE_LUA: &str = include_str!("create.lua");
const LIST_LUA: &str = include_str!("list.lua");
const READ_LUA: &str = include_str!("read.lua");

/// Notifications in Redis, under the bus prefix.
#[derive(Clone, Debug)]
pub struct RedisStore {
    client: Client,
    prefix: String,
    create: LuaScript,
    list: LuaScript,
    read: LuaScript,
}

impl RedisStore {
    /// Over `client` (which may be shared with the bus), keys under `prefix`.
    pub fn new(client: Client, prefix: String) -> RedisStore {
        RedisStore {
            client,
            prefix,
            create: LuaScript::new(CREATE_LUA),
            list: LuaScript::new(LIST_LUA),
            read: LuaScript::new(READ_LUA),
        }
    }

    fn key(&self, user: &str, what: &str) -> String {
        format!("{}user:{{{user}}}:{what}", self.prefix)
    }

    /// `[items, order, unread, seq]`.
    fn keys(&self, user: &str) -> [String; 4] {
        ["notifications", "order", "unread", "seq"].map(|w| self.key(user, w))
    }

    async fn run(&self, script: &LuaScript, keys: Vec<String>, args: Vec<Value>) -> Result<Vec<Value>, StoreError> {
        script
            .run(&self.client, keys, args)
            .await
            .map_err(|e| StoreError(e.to_string()))
    }
}

/// Reads a script's reply, or says which script answered what.
struct Reply<'a> {
    script: &'static str,
    values: &'a [Value],
}

impl Reply<'_> {
    fn bad(&self) -> StoreError {
        StoreError(format!("{}: unexpected reply {:?}", self.script, self.values))
    }

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.values.get(i).and_then(Value::as_i64).ok_or_else(|| self.bad())
    }

    fn stored(&self, i: usize) -> Result<Stored, StoreError> {
        self.values
            .get(i)
            .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(&s).ok()))
            .ok_or_else(|| self.bad())
    }
}

impl Store for RedisStore {
    async fn create(&self, n: Stored, idem: Option<&str>, cap: usize, ttl: Duration) -> Result<Created, StoreError> {
        let mut keys = self.keys(&n.user_id).to_vec();
        keys.push(self.key(&n.user_id, &format!("idem:{}", idem.unwrap_or(""))));
        let json = serde_json::to_string(&n).map_err(|e| StoreError(e.to_string()))?;
        let args: Vec<Value> = vec![
            n.id.clone().into(),
            json.into(),
            (cap as i64).into(),
            (ttl.as_secs() as i64).into(),
            if idem.is_some() { "1" } else { "0" }.into(),
            (IDEMPOTENCY_SECS as i64).into(),
        ];
        let values = self.run(&self.create, keys, args).await?;
        let r = Reply {
            script: "create",
            values: &values,
        };
        Ok(Created {
            new: r.int(0)? == 1,
            notification: Notification {
                stored: r.stored(1)?,
                read: r.int(3)? == 1,
            },
            unread: r.int(2)? as u64,
        })
    }

    async fn list(&self, user: &str, q: PageQuery<'_>) -> Result<Option<Page>, StoreError> {
        let keys = self.keys(user)[..3].to_vec();
        let args: Vec<Value> = vec![
            if q.unread_only { "1" } else { "0" }.into(),
            (q.limit as i64).into(),
            q.before.unwrap_or("").to_owned().into(),
        ];
        let values = self.run(&self.list, keys, args).await?;
        let r = Reply {
            script: "list",
            values: &values,
        };
        let unread = r.int(0)?;
        if unread < 0 {
            return Ok(None);
        }
        let total = r.int(1)? as u64;
        let mut notifications = Vec::new();
        for i in (2..values.len()).step_by(2) {
            let read = values.get(i + 1).and_then(|v| v.as_str()).is_some_and(|s| s == "1");
            notifications.push(Notification {
                stored: r.stored(i)?,
                read,
            });
        }
        Ok(Some(Page {
            notifications,
            unread: unread as u64,
            total,
        }))
    }

    async fn mark_read(&self, user: &str, id: Option<&str>) -> Result<Marked, StoreError> {
        let [items, _, unread, _] = self.keys(user);
        let args: Vec<Value> = vec![id.unwrap_or("").to_owned().into()];
        let values = self.run(&self.read, vec![items, unread], args).await?;
        let r = Reply {
            script: "read",
            values: &values,
        };
        let changed = r.int(0)?;
        if changed < 0 {
            return Ok(Marked::NotFound);
        }
        Ok(Marked::Done {
            changed: changed as u64,
            unread: r.int(1)? as u64,
        })
    }
}
