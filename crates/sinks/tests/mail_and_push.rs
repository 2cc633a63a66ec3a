//! The email and Web Push destinations as deployed: a real redis-server, the `sinks` binary,
//! and the test's own stand-ins for the outside parties: an SMTP relay (`testkit::smtp`) and,
//! for Web Push, a push service that decrypts each message with the subscription's keys and
//! verifies its VAPID signature.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use event_bus::{Broker, Channel};
use serde_json::json;
use testkit::{
    process::{env, Service},
    receiver::{Receiver, Reply},
    smtp::Relay,
    RedisServer,
};

const SMTP_PASSWORD: &str = "smtp-password-never-logged";

/// A stock-out by email: the first attempt is answered 451 (try later) and the retry is the
/// same message (its `Message-ID` is the (event, destination) key), taken with 250; a relay
/// that answers 550 makes a dead letter; the password is used and never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_out_by_email_retried_as_the_same_message() {
    let redis = RedisServer::start().unwrap();
    let relay = Relay::start(|_, n| match n {
        0 => (451, "4.3.0 try again later".into()),
        _ => (250, "2.0.0 queued".into()),
    });
    let bounce = Relay::start(|_, _| (550, "5.1.1 no such mailbox".into()));
    let (_dir, config) = config_file(&format!(
        r#"
[delivery]
backoff_initial_ms = 100
[destinations.mail]
kind = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
username = "alerts"
password = "env:TEST_SMTP_PASSWORD"
from = "Rakuda <alerts@example.com>"
to = ["ops@example.com", "Night Shift <night@example.com>"]
[destinations.bounce]
kind = "email"
host = "127.0.0.1"
port = {bounce}
tls = "none"
from = "alerts@example.com"
to = ["gone@example.com"]
[routes.stockouts]
channels = ["inventory"]
when = ["payload.data.isAvailable == false"]
destinations = ["mail", "bounce"]
"#,
        port = relay.port,
        bounce = bounce.port,
    ));
    let extra = [("TEST_SMTP_PASSWORD", SMTP_PASSWORD), ("RUST_LOG", "debug")];
    let (svc, bus) = start_sinks(&redis, &config, &extra).await;
    let id = bus
        .publish(&Channel::INVENTORY, stockout("prod_mail"))
        .await
        .unwrap()
        .id;
    until("the retry was taken", || relay.mails().len() >= 2).await;
    until_metric(
        &svc,
        "sinks_deliveries_total{destination=\"mail\",outcome=\"accepted\"}",
        1.0,
    )
    .await;
    until_metric(&svc, "sinks_dead_letters_total{destination=\"bounce\"}", 1.0).await;

    let mails = relay.mails();
    assert_eq!(mails.len(), 2, "one refusal, one retry, nothing more");
    let key = sinks::key::of(&Channel::INVENTORY, id, "mail");
    for m in &mails {
        assert_eq!(m.from, "alerts@example.com");
        assert_eq!(m.to, ["ops@example.com", "night@example.com"]);
        assert_eq!(m.auth, Some(("alerts".into(), SMTP_PASSWORD.into())));
        assert_eq!(m.header("message-id"), Some(format!("<{key}@rakuda-realtime>")));
        let subject = m.header("subject").unwrap();
        assert!(
            subject.starts_with("[rakuda] ") && subject.contains("prod_mail"),
            "{subject}"
        );
        assert!(m.data.contains(&format!("event {id}")), "{}", m.data);
    }
    assert_eq!(mails[0].data, mails[1].data, "the retry is the same message");
    let bounced = bounce.mails();
    assert_eq!(bounced.len(), 1, "a 550 is not retried");
    assert!(!svc.log_text().contains(SMTP_PASSWORD), "the password in the log");
}

/// A browser of the test's: its P-256 key and authentication secret, as `pushManager` makes.
struct Browser {
    key: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new(seed: u8) -> Browser {
        Browser {
            key: p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
            auth: [seed; 16],
        }
    }

    /// `PushSubscription.toJSON()` for an endpoint.
    fn subscription(&self, endpoint: &str) -> serde_json::Value {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": B64.encode(self.key.public_key().to_encoded_point(false).as_bytes()),
                "auth": B64.encode(self.auth),
            }
        })
    }
}

/// What the push service stand-in made of one request.
#[derive(Clone, Debug)]
struct Pushed {
    path: String,
    at: std::time::Instant,
    /// The decrypted payload.
    shown: serde_json::Value,
    ttl: String,
    urgency: String,
    topic: String,
}

/// Verifies a VAPID `Authorization` (RFC 8292) with the jsonwebtoken crate (not the one that
/// signed it): `k` is the deployment's public key, and the JWT is ES256 under it, for this
/// push service, from the configured contact, expiring within 24 h.
fn verify_vapid(header: &str, public: &str, origin: &str) -> Result<(), String> {
    let rest = header.strip_prefix("vapid ").ok_or("not a vapid authorization")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("k", v)) => k = Some(v.to_owned()),
            _ => {}
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    if k != public {
        return Err(format!("k={k} is not the deployment's public key"));
    }
    let point = B64.decode(&k).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::DecodingKey::from_ec_components(&B64.encode(&point[1..33]), &B64.encode(&point[33..65]))
        .map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[origin]);
    v.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims: serde_json::Value = jsonwebtoken::decode(&t, &key, &v).map_err(|e| e.to_string())?.claims;
    if claims["sub"] != CONTACT {
        return Err(format!("sub is {}", claims["sub"]));
    }
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if exp > now + 24 * 3600 {
        return Err("exp is more than 24 h away".into());
    }
    Ok(())
}

const CONTACT: &str = "mailto:ops@example.com";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Web Push end to end: the user's browsers subscribe on a real gateway; the sinks push each
/// stock-out to every subscription, encrypted to its browser's keys (the stand-in decrypts it)
/// and signed with the VAPID key (verified by another crate), with the configured TTL and
/// Urgency and a Topic per product; a 429's hint is honoured for that subscription alone (the
/// other is not sent twice); a 410 deletes the subscription; an endpoint at a host the
/// deployment does not allow is refused when subscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_to_each_browser_encrypted_signed_and_pruned() {
    use std::sync::{Arc, Mutex};
    let redis = RedisServer::start().unwrap();
    let (private, public) = sinks::destination::web_push::new_keys();
    let (phone, laptop) = (Arc::new(Browser::new(1)), Arc::new(Browser::new(2)));
    let pushed: Arc<Mutex<Vec<Pushed>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let service = {
        let (phone, laptop, pushed, refused) = (phone.clone(), laptop.clone(), pushed.clone(), refused.clone());
        let public = public.clone();
        let origin: Arc<Mutex<String>> = Arc::default();
        let origin_set = origin.clone();
        let receiver = Receiver::start(move |r, _| {
            let browser = match r.target.as_str() {
                "/push/phone" => &phone,
                "/push/laptop" => &laptop,
                // Made with another applicationServerKey (before a VAPID key rotation): FCM's
                // answer for it.
                "/push/rotated" => return Reply::Status(403, vec![], "the VAPID credentials do not correspond".into()),
                _ => return Reply::Status(410, vec![], "gone".into()),
            };
            let aud = origin.lock().unwrap().clone();
            let checked = verify_vapid(r.header("authorization").unwrap_or(""), &public, &aud).and_then(|()| {
                if r.header("content-encoding") != Some("aes128gcm") {
                    return Err("not aes128gcm".into());
                }
                let auth = web_push_native::Auth::clone_from_slice(&browser.auth);
                let plain = web_push_native::decrypt(r.body.clone(), &browser.key, &auth).map_err(|e| e.to_string())?;
                serde_json::from_slice(&plain).map_err(|e| e.to_string())
            });
            let shown = match checked {
                Ok(v) => v,
                Err(e) => {
                    refused.lock().unwrap().push(format!("{}: {e}", r.target));
                    return Reply::Status(401, vec![], e);
                }
            };
            let mut all = pushed.lock().unwrap();
            let first_to_phone = r.target == "/push/phone" && !all.iter().any(|p| p.path == r.target);
            all.push(Pushed {
                path: r.target.clone(),
                at: r.at,
                shown,
                ttl: r.header("ttl").unwrap_or("").into(),
                urgency: r.header("urgency").unwrap_or("").into(),
                topic: r.header("topic").unwrap_or("").into(),
            });
            if first_to_phone {
                Reply::Status(429, vec![("retry-after".into(), "1".into())], "slow down".into())
            } else {
                Reply::Status(201, vec![], String::new())
            }
        });
        *origin_set.lock().unwrap() = receiver.base();
        receiver
    };
    let allowed = format!("http://127.0.0.1:{}", service.port);
    let url = redis.url();
    let (_gdir, gw_config) = config_file(&format!(
        "[notifications.push]\npublic_key = \"{public}\"\nallowed_hosts = [\"{allowed}\"]\n"
    ));
    let gw_vars = [
        ("REDIS_URL", url.as_str()),
        ("AUTH_MODE", "dev"),
        ("CONFIG_FILE", gw_config.to_str().unwrap()),
        ("RUST_LOG", "warn"),
    ];
    let gw = Service::start(&testkit::process::workspace_bin("sse-gateway"), &env(&gw_vars)).unwrap();
    let token = testkit::process::dev_token(&gw.base(), "sub=ops&role=none").await;
    let key = testkit::process::get_json(&format!("{}/api/push/key", gw.base()), &token).await;
    assert_eq!(key["public_key"], public.as_str());
    let http = reqwest::Client::new();
    let subscribe = |body: serde_json::Value| {
        let req = http
            .post(format!("{}/api/push/subscriptions", gw.base()))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    for (browser, path) in [
        (&phone, "phone"),
        (&laptop, "laptop"),
        (&phone, "old"),
        (&laptop, "rotated"),
    ] {
        let (status, body) = subscribe(browser.subscription(&format!("{allowed}/push/{path}"))).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = subscribe(phone.subscription(&format!("{allowed}/push/phone"))).await;
    assert_eq!(status, 200, "the same endpoint again is the same subscription");
    for bad in [
        phone.subscription("https://evil.example/push"),
        phone.subscription("http://169.254.169.254/latest/meta-data"),
        json!({"endpoint": format!("{allowed}/push/x"), "keys": {"p256dh": "AAAA", "auth": "AAAA"}}),
    ] {
        let (status, body) = subscribe(bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_subscription")),
            "{body}"
        );
    }

    let (_dir, config) = config_file(&format!(
        r#"
[destinations.push]
kind = "web_push"
users = ["ops"]
vapid_private_key = "env:TEST_VAPID_PRIVATE_KEY"
contact = "{CONTACT}"
ttl_secs = 600
urgency = "high"
allowed_hosts = ["{allowed}"]
[routes.stockouts]
channels = ["inventory"]
when = ["payload.data.isAvailable == false"]
destinations = ["push"]
"#
    ));
    let extra = [("TEST_VAPID_PRIVATE_KEY", private.as_str()), ("RUST_LOG", "debug")];
    let (svc, bus) = start_sinks(&redis, &config, &extra).await;
    for product in ["prod_push", "prod_push", "prod_other"] {
        bus.publish(&Channel::INVENTORY, stockout(product)).await.unwrap();
    }
    // The phone: 429 then three; the laptop: three; the old endpoint: one 410; the rotated
    // one: one 403, which concerns that subscription alone (the destination is not disabled).
    until("every stock-out on both browsers", || pushed.lock().unwrap().len() >= 7).await;
    until_metric(
        &svc,
        "sinks_deliveries_total{destination=\"push\",outcome=\"unsubscribed\"}",
        2.0,
    )
    .await;
    until_metric(
        &svc,
        "sinks_deliveries_total{destination=\"push\",outcome=\"accepted\"}",
        3.0,
    )
    .await;

    assert!(refused.lock().unwrap().is_empty(), "{:?}", refused.lock().unwrap());
    let all = pushed.lock().unwrap().clone();
    let to = |path: &str| all.iter().filter(|p| p.path == path).cloned().collect::<Vec<_>>();
    let (p, l) = (to("/push/phone"), to("/push/laptop"));
    assert_eq!((p.len(), l.len()), (4, 3), "{all:?}");
    assert!(
        p[1].at.duration_since(p[0].at) >= Duration::from_millis(990),
        "the phone's retry came before its Retry-After"
    );
    let entities = |v: &[Pushed]| {
        v.iter()
            .map(|p| p.shown["data"]["entity"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(entities(&l), ["prod_push", "prod_push", "prod_other"]);
    assert_eq!(entities(&p[1..]), ["prod_push", "prod_push", "prod_other"]);
    for x in &all {
        assert_eq!((x.ttl.as_str(), x.urgency.as_str()), ("600", "high"));
        assert!(x.shown["title"]
            .as_str()
            .unwrap()
            .contains(x.shown["data"]["entity"].as_str().unwrap()));
    }
    assert_eq!(
        l[0].topic, l[1].topic,
        "the same product: the newer replaces an undelivered one"
    );
    assert_ne!(l[0].topic, l[2].topic);
    assert_eq!(
        metric(&svc, "sinks_disabled{destination=\"push\"}").await,
        Some(0.0),
        "one refused subscription disabled the destination"
    );
    // The gone and the refused ones were deleted; the others are still there, and the key of
    // the user's subscriptions expires with the user's other keys.
    let left = testkit::process::get_json(&format!("{}/api/push/subscriptions", gw.base()), &token).await;
    assert_eq!(left["subscriptions"].as_array().map(Vec::len), Some(2), "{left}");
    let ttl: i64 = redis
        .cli(&["TTL", "rakuda:realtime:user:{ops}:push"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (29 * 86_400..=30 * 86_400).contains(&ttl),
        "the subscriptions' TTL: {ttl}"
    );
    assert!(!svc.log_text().contains(&private), "the VAPID private key in the log");
}
