//! A Redis Cluster owned by the test: three masters, with or without a replica each, or more
//! masters for a benchmark.

use std::time::{Duration, Instant};

use crate::{command, RedisServer, Result};

/// A three-master Redis Cluster owned by the test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them (`redis-cli --cluster create`).
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// Three masters and a replica for each (`--cluster-replicas 1`, a node timeout of 2 s, so
    /// a killed master's replica takes over within seconds).
    pub fn start_with_replicas() -> Result<Self> {
        Self::start_with(true)
    }

    /// `masters` masters (at least 3), no replicas: the slots spread evenly over them.
    pub fn start_masters(masters: usize) -> Result<Self> {
        Self::start_nodes(masters, false)
    }

    fn start_with(replicas: bool) -> Result<Self> {
        Self::start_nodes(if replicas { 6 } else { 3 }, replicas)
    }

    fn start_nodes(count: usize, replicas: bool) -> Result<Self> {
        let timeout = if replicas { "2000" } else { "5000" };
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                timeout,
            ])?);
        }
        // Each node needs its own dir for nodes.conf: start_with gave each a temp dir.
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", if replicas { "1" } else { "0" }, "--cluster-yes"]);
        nodes[0].cli(&args)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes
                .iter()
                .all(|n| command(n.port(), &["CLUSTER", "INFO"]).is_ok_and(|info| info.contains("cluster_state:ok")))
                && (!replicas
                    || nodes.iter().all(|n| {
                        n.cli(&["INFO", "replication"]).is_ok_and(|i| {
                            i.contains("role:master") && i.contains("connected_slaves:1")
                                || i.contains("master_link_status:up")
                        })
                    }));
            if ok {
                return Ok(RedisCluster { nodes });
            }
            if Instant::now() > deadline {
                return Err("cluster did not reach cluster_state:ok within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cluster://127.0.0.1:<p1>?node=127.0.0.1:<p2>&node=127.0.0.1:<p3>`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port());
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port()));
        }
        url
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to stop and restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis-cli -c` against the first node (follows redirections).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        self.nodes[0].cli(&all)
    }
}

impl RedisCluster {
    /// The nodes (indexes into [`RedisCluster::nodes`]) that are master and replica of `slot`
    /// now, as node `asker` sees them.
    pub fn owners(&self, asker: usize, slot: u16) -> Result<(usize, Option<usize>)> {
        let text = self.nodes[asker].cli(&["CLUSTER", "NODES"])?;
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        let port_of = |addr: &str| -> Option<u16> { addr.split('@').next()?.rsplit(':').next()?.parse().ok() };
        let index = |port: u16| self.nodes.iter().position(|n| n.port() == port);
        let covers = |range: &str| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
        };
        let master = rows
            .iter()
            .find(|r| {
                r.len() > 8 && r[2].contains("master") && !r[2].contains("fail") && r[8..].iter().any(|x| covers(x))
            })
            .ok_or(format!("no master serves slot {slot}:\n{text}"))?;
        let replica = rows
            .iter()
            .find(|r| r.len() > 3 && r[3] == master[0] && !r[2].contains("fail"))
            .and_then(|r| port_of(r[1]))
            .and_then(index);
        let m = port_of(master[1]).and_then(index).ok_or("master not one of ours")?;
        Ok((m, replica))
    }

    /// Moves `slots` slots from master `from` to master `to` (indices into
    /// [`RedisCluster::nodes`]) with `redis-cli --cluster reshard`, as an operator does, while
    /// clients go on. Returns once it is done.
    pub fn reshard(&self, from: usize, to: usize, slots: usize) -> Result<()> {
        let id = |i: usize| self.nodes[i].cli(&["CLUSTER", "MYID"]).map(|s| s.trim().to_owned());
        let (from_id, to_id) = (id(from)?, id(to)?);
        let at = format!("127.0.0.1:{}", self.nodes[from].port());
        let slots = slots.to_string();
        let out = self.nodes[from].cli(&[
            "--cluster",
            "reshard",
            &at,
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
        ])?;
        if out.contains("[ERR]") {
            return Err(format!("redis-cli --cluster reshard: {out}"));
        }
        Ok(())
    }

    /// Moves `slot` to master `to` (an index into [`RedisCluster::nodes`]) the way
    /// `redis-cli --cluster reshard` does, while clients go on: `IMPORTING` on the target,
    /// `MIGRATING` on the source, its keys `MIGRATE`d in batches, then `SETSLOT NODE` on every
    /// master. Returns once every node agrees.
    pub fn move_slot(&self, slot: u16, to: usize) -> Result<()> {
        let from = self.owners(to, slot)?.0;
        if from == to {
            return Ok(());
        }
        let id = |i: usize| self.nodes[i].cli(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from)?, id(to)?);
        let slot_s = slot.to_string();
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        dst.cli(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])?;
        src.cli(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])?;
        let port = dst.port().to_string();
        loop {
            let keys = src.cli(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"])?;
            let keys: Vec<&str> = keys.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let out = src.cli(&args)?;
            if out.contains("ERR") {
                return Err(format!("MIGRATE: {out}"));
            }
        }
        // The target first, then the source (which ends its shard channel subscribers of the
        // slot), then everyone else.
        let mut order = vec![to, from];
        order.extend((0..self.nodes.len()).filter(|i| *i != to && *i != from));
        for i in order {
            if self.nodes[i].cli(&["ROLE"])?.lines().next() == Some("master") {
                self.nodes[i].cli(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id])?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(0..self.nodes.len()).all(|i| self.owners(i, slot).is_ok_and(|(m, _)| m == to)) {
            if Instant::now() > deadline {
                return Err(format!("slot {slot} not on node {to} everywhere within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}
