//! One conformance suite for both notification stores and the service over both buses: the
//! memory ones, and Redis on a real redis-server the test starts on a free loopback port (and
//! stops when it ends, pass or fail).

use std::time::Duration;

use event_bus::{AnyBus, Broker, BusConfig, Channel, EventId, MemoryBus, SharedEnvelope};
use notifications::{
    AnyStore, Error, Level, Marked, MemoryStore, NewNotification, Notifications, NotificationsConfig, PageQuery,
    RedisStore, Store, Stored, NOTIFICATION, NOTIFICATION_READ,
};
use testkit::RedisServer;

const TTL: Duration = Duration::from_secs(60);

/// A bus carrying the private channel, and the store that goes with it; the server, if any,
/// lives as long as the fixture.
struct Fixture {
    bus: AnyBus,
    config: NotificationsConfig,
    _redis: Option<RedisServer>,
}

impl Fixture {
    async fn memory() -> Fixture {
        let config = NotificationsConfig::default();
        let bus = MemoryBus::new(bus_config(&config, None)).unwrap();
        Fixture {
            bus: AnyBus::Memory(bus),
            config,
            _redis: None,
        }
    }

    async fn redis() -> Fixture {
        let redis = RedisServer::start().expect("start redis-server");
        let config = NotificationsConfig::default();
        let bus = event_bus::connect(bus_config(&config, Some(redis.url())))
            .await
            .unwrap();
        Fixture {
            bus,
            config,
            _redis: Some(redis),
        }
    }

    fn store(&self) -> AnyStore {
        AnyStore::for_bus(&self.bus)
    }

    fn service(&self) -> Notifications<AnyBus> {
        Notifications::new(self.config.clone(), self.store(), self.bus.clone())
    }

    /// Everything published on the private channel so far.
    /// What was published for alice and bob: each in the user's partition, none in the
    /// channel itself.
    async fn published(&self) -> Vec<SharedEnvelope> {
        let shared = self
            .bus
            .replay(&self.config.channel, EventId::ZERO, 1000)
            .await
            .unwrap();
        assert!(
            shared.events.is_empty(),
            "published in the whole channel: {:?}",
            shared.events
        );
        let mut out = Vec::new();
        for user in ["alice", "bob"] {
            let partition = self.config.channel.user_partition(user).unwrap();
            let page = self.bus.replay(&partition, EventId::ZERO, 1000).await.unwrap();
            assert!(page.events.iter().all(|e| notifications::owner(e) == Some(user)));
            out.extend(page.events);
        }
        out.sort_by_key(|e| e.id);
        out
    }
}

fn bus_config(n: &NotificationsConfig, redis_url: Option<String>) -> BusConfig {
    let mut c = BusConfig {
        redis_url,
        ..Default::default()
    };
    c.channels.push(n.channel_spec());
    c
}

fn stored(user: &str, i: usize) -> Stored {
    Stored {
        id: format!("n{i}"),
        user_id: user.into(),
        level: Level::Info,
        title: format!("t{i}"),
        message: String::new(),
        created_at: event_bus::Timestamp::now(),
    }
}

fn q(unread_only: bool, limit: usize, before: Option<&str>) -> PageQuery<'_> {
    PageQuery {
        unread_only,
        limit,
        before,
    }
}

fn ids(page: &notifications::Page) -> Vec<&str> {
    page.notifications.iter().map(|n| n.stored.id.as_str()).collect()
}

async fn caps_pages_and_marks(s: impl Store) {
    for i in 0..7 {
        assert!(s.create(stored("a", i), None, 5, TTL).await.unwrap().new);
    }
    s.create(stored("b", 99), None, 5, TTL).await.unwrap();
    let all = s.list("a", q(false, 50, None)).await.unwrap().unwrap();
    assert_eq!(
        ids(&all),
        ["n6", "n5", "n4", "n3", "n2"],
        "newest first, oldest two dropped"
    );
    assert_eq!((all.unread, all.total), (5, 5));
    let page = s.list("a", q(false, 2, Some("n5"))).await.unwrap().unwrap();
    assert_eq!(ids(&page), ["n4", "n3"]);
    assert!(
        s.list("a", q(false, 2, Some("n0"))).await.unwrap().is_none(),
        "dropped id"
    );
    assert!(
        s.list("a", q(false, 2, Some("n99"))).await.unwrap().is_none(),
        "another user's id"
    );
    assert_eq!(s.mark_read("a", Some("n99")).await.unwrap(), Marked::NotFound);
    assert_eq!(
        s.mark_read("a", Some("n4")).await.unwrap(),
        Marked::Done { changed: 1, unread: 4 }
    );
    assert_eq!(
        s.mark_read("a", Some("n4")).await.unwrap(),
        Marked::Done { changed: 0, unread: 4 },
        "marking twice changes nothing"
    );
    let unread = s.list("a", q(true, 50, None)).await.unwrap().unwrap();
    assert_eq!(ids(&unread), ["n6", "n5", "n3", "n2"]);
    assert!(unread.notifications.iter().all(|n| !n.read));
    let read = s.list("a", q(false, 50, None)).await.unwrap().unwrap();
    assert!(read.notifications.iter().any(|n| n.stored.id == "n4" && n.read));
    assert_eq!(
        s.mark_read("a", None).await.unwrap(),
        Marked::Done { changed: 4, unread: 0 }
    );
    let b = s.list("b", q(true, 50, None)).await.unwrap().unwrap();
    assert_eq!(b.unread, 1, "another user's state is untouched");
}

async fn a_repeated_idempotency_key_returns_the_first(s: impl Store) {
    let first = s.create(stored("a", 1), Some("k"), 10, TTL).await.unwrap();
    let again = s.create(stored("a", 2), Some("k"), 10, TTL).await.unwrap();
    assert!(first.new && !again.new);
    assert_eq!(again.notification.stored.id, "n1");
    assert_eq!(again.unread, 1);
    let other_user = s.create(stored("b", 3), Some("k"), 10, TTL).await.unwrap();
    assert!(other_user.new, "keys are per user");
    assert_eq!(s.list("a", q(false, 10, None)).await.unwrap().unwrap().total, 1);
    s.mark_read("a", Some("n1")).await.unwrap();
    let after_read = s.create(stored("a", 4), Some("k"), 10, TTL).await.unwrap();
    assert!(
        !after_read.new && after_read.notification.read,
        "the first, as it is now"
    );
}

async fn unknown_users_have_empty_pages(s: impl Store) {
    let p = s.list("nobody", q(false, 10, None)).await.unwrap().unwrap();
    assert_eq!((p.notifications.len(), p.unread, p.total), (0, 0, 0));
    assert!(s.list("nobody", q(false, 10, Some("x"))).await.unwrap().is_none());
    assert_eq!(s.mark_read("nobody", Some("x")).await.unwrap(), Marked::NotFound);
    assert_eq!(
        s.mark_read("nobody", None).await.unwrap(),
        Marked::Done { changed: 0, unread: 0 }
    );
}

fn new(user: &str, title: &str, key: Option<&str>) -> NewNotification {
    NewNotification {
        user_id: user.into(),
        level: Level::Warning,
        title: title.into(),
        message: "m".into(),
        idempotency_key: key.map(str::to_owned),
    }
}

/// Store, then publish: each create and each read is one event for its user's devices.
async fn the_service_stores_then_publishes(f: Fixture) {
    let n = f.service();
    let c = n.create(new("alice", "  Out of stock  ", Some("k1"))).await.unwrap();
    assert_eq!(c.notification.stored.title, "Out of stock", "trimmed");
    let again = n.create(new("alice", "Out of stock", Some("k1"))).await.unwrap();
    assert!(!again.new);
    let published = f.published().await;
    assert_eq!(published.len(), 1, "a retried create is one event");
    let ev = &published[0];
    assert_eq!(ev.event_type.as_str(), NOTIFICATION);
    assert_eq!(ev.payload.id, c.notification.stored.id);
    assert_eq!(notifications::owner(ev), Some("alice"));
    assert_eq!(ev.payload.data.as_ref().unwrap()["unread"], 1);

    let id = c.notification.stored.id.clone();
    let m = n.mark("alice", Some(id.clone())).await.unwrap();
    assert_eq!((m.changed, m.unread), (1, 0));
    assert!(matches!(
        n.mark("alice", Some("nope".into())).await,
        Err(Error::NotFound)
    ));
    assert!(
        matches!(n.mark("bob", Some(id.clone())).await, Err(Error::NotFound)),
        "not bob's"
    );
    // An empty id is no notification: it neither marks everything nor publishes.
    n.create(new("alice", "still unread", None)).await.unwrap();
    assert!(matches!(
        n.mark("alice", Some(String::new())).await,
        Err(Error::NotFound)
    ));
    assert_eq!(n.snapshot("alice").await.unwrap().0, 1, "nothing was marked");
    n.mark("alice", None).await.unwrap();
    let none = n.mark("alice", None).await.unwrap();
    assert_eq!(none.changed, 0);
    let published = f.published().await;
    let types: Vec<&str> = published.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [NOTIFICATION, NOTIFICATION_READ, NOTIFICATION, NOTIFICATION_READ],
        "the empty id published nothing; a read-all that changed nothing is silent"
    );
    assert_eq!(published[3].payload.data.as_ref().unwrap()["all"], true);
    assert_eq!(published[1].payload.data.as_ref().unwrap()["ids"][0], id.as_str());

    n.create(new("alice", "second", None)).await.unwrap();
    let (unread, list) = n.snapshot("alice").await.unwrap();
    assert_eq!((unread, list.len()), (1, 1));
    assert_eq!(list[0].stored.title, "second");
    let page = n.list("alice", q(false, 10, None)).await.unwrap();
    assert_eq!(page.total, 3);
}

async fn bad_requests_say_which_field(f: Fixture) {
    let n = f.service();
    let code = |r: Result<notifications::Created, Error>| match r {
        Err(Error::Invalid { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(code(n.create(new("a{b}", "t", None)).await), "bad_user");
    assert_eq!(code(n.create(new("a", "   ", None)).await), "bad_title");
    assert_eq!(code(n.create(new("a", &"x".repeat(201), None)).await), "bad_title");
    let mut long = new("a", "t", None);
    long.message = "x".repeat(4001);
    assert_eq!(code(n.create(long).await), "bad_message");
    assert_eq!(code(n.create(new("a", "t", Some(""))).await), "invalid_idempotency_key");
    assert_eq!(
        code(n.create(new("a", "t", Some("a\nb"))).await),
        "invalid_idempotency_key"
    );
    assert!(matches!(
        n.list("a", q(false, 10, Some("missing"))).await,
        Err(Error::Invalid { code: "bad_before", .. })
    ));
    assert!(f.published().await.is_empty(), "nothing refused was published");
    let quiet = Notifications::new(f.config.clone(), f.store(), f.bus.clone()).publishing(false);
    quiet.create(new("a", "t", None)).await.unwrap();
    assert!(f.published().await.is_empty(), "publishing off: stored only");
    assert_eq!(quiet.snapshot("a").await.unwrap().0, 1);
}

#[tokio::test]
async fn memory_store() {
    caps_pages_and_marks(MemoryStore::default()).await;
    a_repeated_idempotency_key_returns_the_first(MemoryStore::default()).await;
    unknown_users_have_empty_pages(MemoryStore::default()).await;
}

#[tokio::test]
async fn redis_store() {
    // One server, a fresh prefix per case.
    let redis = RedisServer::start().expect("start redis-server");
    let bus = testkit::bus::redis_bus(&redis).await;
    let store = |p: &str| RedisStore::new(bus.client().clone(), format!("{p}:rakuda:realtime:"));
    caps_pages_and_marks(store("t1")).await;
    a_repeated_idempotency_key_returns_the_first(store("t2")).await;
    unknown_users_have_empty_pages(store("t3")).await;
    // Every key of a user shares its hash tag and expires.
    let ttl: i64 = redis
        .cli(&["TTL", "t1:rakuda:realtime:user:{a}:notifications"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn service_on_memory() {
    the_service_stores_then_publishes(Fixture::memory().await).await;
    bad_requests_say_which_field(Fixture::memory().await).await;
}

#[tokio::test]
async fn service_on_redis() {
    the_service_stores_then_publishes(Fixture::redis().await).await;
    bad_requests_say_which_field(Fixture::redis().await).await;
}

#[test]
fn the_private_channel_is_a_bus_channel() {
    let c = NotificationsConfig::default();
    assert_eq!(c.channel_spec().name, Channel::new("notifications").unwrap());
}
