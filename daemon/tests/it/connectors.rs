//! The real connectors, loaded as `.so` files by the real host, against
//! local servers answering as the vendors document (`vendors.rs`): one
//! conformance suite every connector passes, each connector's own
//! requests and events, and the full path from a Zendesk ticket to one
//! HubSpot task.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use touchpilot::plugin_host::{Limits, Plugin};
use touchpilot_plugin::caps;

use crate::plugins::library;
use crate::vendors::{self, Mock, Resp};

fn limits() -> Limits {
    Limits {
        http_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(20),
    }
}

fn zendesk_config(base: &str) -> Value {
    json!({"base_url": base, "email": vendors::zendesk::AUTH_EMAIL, "token": vendors::zendesk::AUTH_TOKEN,
           "webhook_secret": "zd-secret", "start_time": 1767225600})
}

fn hubspot_config(base: &str) -> Value {
    json!({"base_url": base, "oauth": {"client_id": "cid", "client_secret": vendors::hubspot::CLIENT_SECRET, "refresh_token": "hs-refresh",
                     "access_token": "tok-1"},
           "start_ms": 1767225600000i64, "owners": {"dana@vendor.example": "64492917"}})
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// What the conformance suite needs to know about one connector.
struct Case {
    stem: &'static str,
    mock: Mock,
    config: Value,
    /// An action it supports, with content, for an account it knows.
    action: &'static str,
    content: Value,
    account: Value,
    /// How many objects the vendor holds that actions created.
    created: fn(&Mock) -> usize,
}

/// Every connector: loads and describes itself, refuses a bad
/// configuration by field, refuses an action it lacks by listing those it
/// has, writes idempotently, pages a poll to its end, classifies a 429
/// with `Retry-After`, and refuses an unsigned webhook.
async fn conformance(c: Case) {
    let lib = library(c.stem);
    let mut bad = c.config.clone();
    bad["no_such_field"] = json!(1);
    let e = Plugin::load("x", &lib, &bad, limits()).unwrap_err();
    assert!(
        e.to_string()
            .contains("config: unknown field `no_such_field`"),
        "{}: {e}",
        c.stem
    );

    let p = Plugin::load("x", &lib, &c.config, limits()).unwrap();
    assert!(!p.plugin_name.is_empty() && !p.version.is_empty());
    assert!(p.can(caps::ACTIONS) && p.can(caps::SOURCE), "{}", c.stem);
    assert_eq!(p.call("check", &Value::Null).await.unwrap(), json!({}));

    let act = |action: &str, key: &str| {
        json!({"action": action, "key": key, "account": c.account, "content": c.content,
               "at": "2026-03-02T10:00:00Z", "now": "2026-03-02T10:00:00Z"})
    };
    let e = p
        .call("act", &act("launch_rocket", "tp-0"))
        .await
        .unwrap_err();
    assert!(!e.retryable());
    assert!(
        e.to_string()
            .contains("has no action `launch_rocket`; it offers"),
        "{e}"
    );

    let first = p.call("act", &act(c.action, "tp-1")).await.unwrap();
    assert_eq!(first["created"], true, "{}: {first}", c.stem);
    let again = p.call("act", &act(c.action, "tp-1")).await.unwrap();
    assert_eq!(
        again["created"], false,
        "{}: a retry finds its result: {again}",
        c.stem
    );
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        (c.created)(&c.mock),
        1,
        "{}: one object for one key",
        c.stem
    );

    // A poll from nothing pages to its end with the cursors it returns.
    let mut cursor = Value::Null;
    for page in 0.. {
        assert!(page < 20, "{}: the poll never ends", c.stem);
        let r = p
            .call(
                "poll",
                &json!({"cursor": cursor, "now": "2026-03-02T12:00:00Z"}),
            )
            .await
            .unwrap();
        assert!(!r["cursor"].is_null(), "{}: {r}", c.stem);
        cursor = r["cursor"].clone();
        if r["more"] != true {
            break;
        }
    }

    // Rate limited: retryable, no sooner than the vendor said.
    c.mock.fault(
        "/",
        Resp {
            status: 429,
            headers: vec![("retry-after", "17".into())],
            body: json!({"error": "TooManyRequests"}),
            hang: false,
        },
    );
    let e = p
        .call(
            "poll",
            &json!({"cursor": cursor, "now": "2026-03-02T12:00:00Z"}),
        )
        .await
        .unwrap_err();
    assert!(e.retryable(), "{}: {e}", c.stem);
    assert_eq!(
        e.retry_after(),
        Some(Duration::from_secs(17)),
        "{}: {e}",
        c.stem
    );

    if p.can(caps::WEBHOOK) {
        let r = p
            .call(
                "webhook",
                &json!({"method": "POST", "uri": "http://x/hooks/x", "headers": [], "body": "{}",
                        "now": "2026-03-02T12:00:00Z"}),
            )
            .await
            .unwrap();
        assert!(
            r["rejected"].as_str().unwrap().contains("not signed"),
            "{r}"
        );
    }
}

fn zendesk_data() -> (Value, Value) {
    let orgs = json!([
        {"id": 509974, "name": "Acme", "external_id": "ACME-1", "domain_names": ["acme.example"], "tags": ["enterprise"],
         "organization_fields": {"tier": "gold"}, "created_at": "2025-11-14T00:14:52Z", "updated_at": "2026-01-02T00:00:00Z"},
        {"id": 509975, "name": "Globex", "external_id": null, "domain_names": [], "tags": [],
         "organization_fields": {}, "created_at": "2025-11-14T00:14:52Z", "updated_at": "2026-01-03T00:00:00Z"},
        {"id": 509976, "name": "Initech", "external_id": null, "domain_names": [], "tags": [],
         "organization_fields": {}, "created_at": "2025-11-14T00:14:52Z", "updated_at": "2026-01-04T00:00:00Z"}
    ]);
    let tickets = json!([
        {"id": 35436, "subject": "Help, my printer is on fire!", "priority": "urgent", "status": "new",
         "organization_id": 509974, "requester_id": 20978392, "tags": ["enterprise"],
         "created_at": "2026-03-02T09:00:00Z", "updated_at": "2026-03-02T09:00:00Z"},
        {"id": 35437, "subject": "Invoice question", "priority": "low", "status": "open",
         "organization_id": 509975, "requester_id": 20978393, "tags": [],
         "created_at": "2026-02-01T09:00:00Z", "updated_at": "2026-03-01T09:00:00Z"},
        {"id": 35438, "subject": "No organization", "priority": "high", "status": "open",
         "organization_id": null, "requester_id": 1, "tags": [],
         "created_at": "2026-03-01T09:00:00Z", "updated_at": "2026-03-01T10:00:00Z"}
    ]);
    (orgs, tickets)
}

fn hubspot_data() -> (Value, Value, Value) {
    let companies = json!([
        {"id": "500123", "properties": {"name": "Acme", "domain": "acme.example", "industry": "fintech", "mrr": "5200",
            "hubspot_owner_id": "64492917", "hs_lastmodifieddate": "2026-01-02T00:00:00.000Z"},
         "createdAt": "2023-11-07T05:31:56Z", "updatedAt": "2026-01-02T00:00:00Z", "archived": false},
        {"id": "500124", "properties": {"name": "Globex", "domain": "globex.example", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"},
         "createdAt": "2023-11-07T05:31:56Z", "updatedAt": "2026-01-03T00:00:00Z", "archived": false},
        {"id": "500125", "properties": {"name": "Initech", "hs_lastmodifieddate": "2026-01-04T00:00:00.000Z"},
         "createdAt": "2023-11-07T05:31:56Z", "updatedAt": "2026-01-04T00:00:00Z", "archived": false}
    ]);
    let contacts = json!({
        "9001": {"email": "ann@acme.example", "firstname": "Ann", "lastname": "Lee"},
        "9002": {"email": "cy@acme.example", "firstname": "Cy", "lastname": "Oh"}
    });
    let associations = json!({"500123": [[9001, "Champion"], [9002, "Executive sponsor"]]});
    (companies, contacts, associations)
}

#[tokio::test]
async fn zendesk_passes_the_conformance_suite() {
    let (orgs, tickets) = zendesk_data();
    let mock = vendors::zendesk::start(orgs, tickets).await;
    conformance(Case {
        stem: "touchpilot_zendesk",
        config: zendesk_config(&mock.base),
        mock,
        action: "create_ticket",
        content: json!({"subject": "Renewal risk", "body": "Usage down 30%", "priority": "high"}),
        account: json!({"id": "509974", "name": "Acme"}),
        created: |m| m.data.lock().unwrap()["created"].as_array().unwrap().len(),
    })
    .await;
}

#[tokio::test]
async fn hubspot_passes_the_conformance_suite() {
    let (companies, contacts, associations) = hubspot_data();
    let mock = vendors::hubspot::start(companies, contacts, associations).await;
    conformance(Case {
        stem: "touchpilot_hubspot",
        config: hubspot_config(&mock.base),
        mock,
        action: "create_task",
        content: json!({"subject": "Call Acme about renewal", "body": "Usage down 30%", "priority": "high"}),
        account: json!({"id": "509974", "attributes": {"hubspot_company_id": "500123"},
                        "owner": {"email": "dana@vendor.example"}}),
        created: |m| m.data.lock().unwrap()["tasks"].as_array().unwrap().len(),
    })
    .await;
}

#[tokio::test]
async fn zendesk_polls_both_exports_page_by_page_and_yields_ticket_events() {
    let (orgs, tickets) = zendesk_data();
    let mock = vendors::zendesk::start(orgs, tickets).await;
    let p = Plugin::load(
        "zendesk",
        &library("touchpilot_zendesk"),
        &zendesk_config(&mock.base),
        limits(),
    )
    .unwrap();
    let now = json!("2026-03-02T12:00:00Z");
    let r1 = p
        .call("poll", &json!({"cursor": null, "now": now}))
        .await
        .unwrap();
    assert_eq!(r1["more"], true);
    assert_eq!(r1["accounts"].as_array().unwrap().len(), 2);
    assert_eq!(r1["accounts"][0]["id"], "509974");
    assert_eq!(r1["accounts"][0]["attributes"]["fields"]["tier"], "gold");
    let r2 = p
        .call("poll", &json!({"cursor": r1["cursor"], "now": now}))
        .await
        .unwrap();
    assert_eq!(r2["more"], false, "{r2}");
    // The time-based export includes its start second: Globex comes
    // again, and is deduplicated when stored.
    let names: Vec<&str> = r2["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Globex", "Initech"]);
    // The requests: start_time first, then the export's own cursor and end_time.
    let orgs = mock.seen("/api/v2/incremental/organizations.json");
    assert_eq!(orgs[0].query("start_time").as_deref(), Some("1767225600"));
    assert_eq!(orgs[1].query("start_time").as_deref(), Some("1767398400"));
    let tix = mock.seen("/api/v2/incremental/tickets/cursor.json");
    assert_eq!(tix[0].query("start_time").as_deref(), Some("1767225600"));
    assert_eq!(tix[1].query("cursor").as_deref(), Some("pos2"));
    assert!(
        tix.iter()
            .all(|r| r.header("accept") == Some("application/json"))
    );
    // Events: a ticket without organization is no account's.
    let mut ids: Vec<String> = [&r1, &r2]
        .iter()
        .flat_map(|r| {
            r["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "zendesk:ticket:35436:created",
            "zendesk:ticket:35437:2026-03-01T09:00:00Z",
            "zendesk:ticket:35437:created",
        ]
    );
    // Caught up: the organization export restarts `overlap` before its end.
    assert_eq!(
        r2["cursor"]["organizations"]["start_time"],
        1767484800 - 300
    );
    assert_eq!(r2["cursor"]["tickets"]["after"], "pos3");
}

#[tokio::test]
async fn zendesk_refuses_bad_credentials_and_reports_validation_errors() {
    let (orgs, tickets) = zendesk_data();
    let mock = vendors::zendesk::start(orgs, tickets).await;
    let mut config = zendesk_config(&mock.base);
    config["token"] = json!("wrong");
    let p = Plugin::load("zendesk", &library("touchpilot_zendesk"), &config, limits()).unwrap();
    let e = p
        .call(
            "poll",
            &json!({"cursor": null, "now": "2026-03-02T12:00:00Z"}),
        )
        .await
        .unwrap_err();
    assert!(!e.retryable());
    assert!(
        e.to_string().contains(
            "HTTP 401 {\"error\":\"Couldn't authenticate you\"}: check `email` and `token`"
        ),
        "{e}"
    );

    let p = Plugin::load(
        "zendesk",
        &library("touchpilot_zendesk"),
        &zendesk_config(&mock.base),
        limits(),
    )
    .unwrap();
    let e = p
        .call(
            "act",
            &json!({"action": "create_ticket", "key": "tp-2", "account": {"id": "509974"},
                              "content": {"subject": ""}, "now": "2026-03-02T12:00:00Z"}),
        )
        .await
        .unwrap_err();
    assert!(!e.retryable());
    assert!(
        e.to_string().contains("zendesk create_ticket: HTTP 422"),
        "{e}"
    );
    let sent = mock.seen("/api/v2/tickets.json")[0].json();
    assert_eq!(sent["ticket"]["external_id"], "tp-2");
    assert_eq!(sent["ticket"]["organization_id"], 509974);
}

#[tokio::test]
async fn hubspot_refreshes_an_expired_token_and_reads_companies_with_contact_roles() {
    let (companies, contacts, associations) = hubspot_data();
    let mock = vendors::hubspot::start(companies, contacts, associations).await;
    let p = Plugin::load(
        "hubspot",
        &library("touchpilot_hubspot"),
        &hubspot_config(&mock.base),
        limits(),
    )
    .unwrap();
    let now = json!("2026-03-02T12:00:00Z");
    let r1 = p
        .call("poll", &json!({"cursor": null, "now": now}))
        .await
        .unwrap();
    let acme = &r1["accounts"][0];
    assert_eq!(acme["id"], "500123");
    assert_eq!(acme["mrr"], 5200.0);
    assert_eq!(acme["owner"]["hubspot_owner_id"], "64492917");
    assert_eq!(
        acme["contacts"],
        json!([
        {"email": "ann@acme.example", "name": "Ann Lee", "hubspot_contact_id": "9001", "role": "champion"},
        {"email": "cy@acme.example", "name": "Cy Oh", "hubspot_contact_id": "9002", "role": "sponsor"}])
    );
    assert_eq!(r1["more"], true);
    let r2 = p
        .call("poll", &json!({"cursor": r1["cursor"], "now": now}))
        .await
        .unwrap();
    assert_eq!(r2["more"], false);
    assert_eq!(r2["accounts"][0]["name"], "Initech");
    // The first token is refreshed from the token endpoint once, then used.
    let token = mock.seen("/oauth/v1/token");
    assert_eq!(token.len(), 1);
    assert!(token[0].body.contains("grant_type=refresh_token&client_id=cid&client_secret=hs-client-secret&refresh_token=hs-refresh"));
    let searches = mock.seen("/crm/v3/objects/companies/search");
    assert_eq!(searches[0].header("authorization"), Some("Bearer tok-1"));
    assert!(
        searches[1..]
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-2"))
    );
    let body = searches[1].json();
    assert_eq!(
        body["filterGroups"][0]["filters"][0],
        json!({"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1767225600000"})
    );
    assert_eq!(
        body["sorts"][0],
        json!({"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"})
    );
    assert_eq!(searches[2].json()["after"], "2");
    // Caught up: the next poll starts `overlap` before the last change seen.
    assert_eq!(
        r2["cursor"]["companies"]["since_ms"],
        1767484800000i64 - 300_000
    );
    // Deals are events of their company, read in the same polls.
    let deals: Vec<&Value> = [&r1, &r2]
        .iter()
        .flat_map(|r| r["events"].as_array().unwrap())
        .collect();
    assert_eq!(deals.len(), 2, "{deals:?}");
    assert_eq!(deals[0]["id"], "hubspot:deal:7001:created");
    assert_eq!(deals[0]["account"], "500123");
    assert_eq!(deals[0]["data"]["amount"], 62400.0);
    assert_eq!(
        (deals[1]["type"].as_str(), deals[1]["at"].as_str()),
        (Some("deal.updated"), Some("2026-01-06T00:00:00Z"))
    );
    assert_eq!(
        mock.seen("/crm/v3/objects/deals/search")[0].json()["properties"][0],
        "dealname"
    );

    // A private-app token that is refused is fatal: nothing to refresh.
    let fixed = json!({"base_url": mock.base, "token": "revoked"});
    let p = Plugin::load("hubspot", &library("touchpilot_hubspot"), &fixed, limits()).unwrap();
    let e = p
        .call("poll", &json!({"cursor": null, "now": now}))
        .await
        .unwrap_err();
    assert!(
        !e.retryable() && e.to_string().contains("replace `token`"),
        "{e}"
    );
}

#[tokio::test]
async fn hubspot_creates_a_task_for_the_owner_due_later_and_linked_to_the_company() {
    let (companies, contacts, associations) = hubspot_data();
    let mock = vendors::hubspot::start(companies, contacts, associations).await;
    let p = Plugin::load(
        "hubspot",
        &library("touchpilot_hubspot"),
        &hubspot_config(&mock.base),
        limits(),
    )
    .unwrap();
    let r = p
        .call(
            "act",
            &json!({"action": "create_task", "key": "tp-abc",
            "account": {"id": "500123", "owner": {"email": "dana@vendor.example"}},
            "content": {"subject": "Call Acme", "body": "Urgent ticket", "priority": "high"},
            "at": "2026-03-02T10:00:00Z", "now": "2026-03-02T10:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"id": "9000", "created": true}));
    let search = &mock.seen("/crm/v3/objects/tasks/search")[1];
    assert_eq!(
        search.json()["filterGroups"][0]["filters"][0],
        json!({"propertyName": "touchpilot_key", "operator": "EQ", "value": "tp-abc"})
    );
    let create = mock
        .seen("/crm/v3/objects/tasks")
        .into_iter()
        .find(|r| r.path() == "/crm/v3/objects/tasks")
        .unwrap();
    assert_eq!(
        create.json(),
        json!({
        "properties": {"hs_timestamp": "2026-03-05T10:00:00Z", "hs_task_subject": "Call Acme", "hs_task_body": "Urgent ticket",
            "hs_task_status": "NOT_STARTED", "hs_task_priority": "HIGH", "hs_task_type": "TODO",
            "hubspot_owner_id": "64492917", "touchpilot_key": "tp-abc"},
        "associations": [{"to": {"id": "500123"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]})
    );
}

#[tokio::test]
async fn hubspot_validation_errors_are_fatal_and_say_why() {
    let (companies, contacts, associations) = hubspot_data();
    let mock = vendors::hubspot::start(companies, contacts, associations).await;
    let p = Plugin::load(
        "hubspot",
        &library("touchpilot_hubspot"),
        &hubspot_config(&mock.base),
        limits(),
    )
    .unwrap();
    let e = p
        .call("act", &json!({"action": "create_task", "key": "tp-v", "account": {"id": "500123", "owner": {"hubspot_owner_id": "999"}},
            "content": {"subject": "Call"}, "at": "2026-03-02T10:00:00Z", "now": "2026-03-02T10:00:00Z"}))
        .await
        .unwrap_err();
    assert!(!e.retryable());
    assert!(
        e.to_string().contains("hubspot create_task: HTTP 400")
            && e.to_string().contains("VALIDATION_ERROR"),
        "{e}"
    );
    assert!(
        mock.data.lock().unwrap()["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// A v3 signature as HubSpot computes it.
fn hubspot_signature(uri: &str, body: &str, ts: &str) -> String {
    use touchpilot_plugin::sign;
    sign::base64(&sign::hmac_sha256(
        vendors::hubspot::CLIENT_SECRET.as_bytes(),
        &[b"POST", uri.as_bytes(), body.as_bytes(), ts.as_bytes()],
    ))
}

#[tokio::test]
async fn hubspot_webhooks_are_verified_and_stale_ones_refused() {
    let (companies, contacts, associations) = hubspot_data();
    let mock = vendors::hubspot::start(companies, contacts, associations).await;
    let p = Plugin::load(
        "hubspot",
        &library("touchpilot_hubspot"),
        &hubspot_config(&mock.base),
        limits(),
    )
    .unwrap();
    let body = r#"[{"eventId":100,"subscriptionId":7,"portalId":62515,"appId":1,"occurredAt":1772445600000,"subscriptionType":"company.propertyChange","attemptNumber":0,"objectId":500123,"changeSource":"CRM","propertyName":"lifecyclestage","propertyValue":"customer"}]"#;
    let uri = "https://cs.example.com/hooks/hubspot";
    let now_ms = t("2026-03-02T10:01:00Z").as_millisecond();
    let ts = now_ms.to_string();
    let call = |sig: String, ts: String, now: &str| {
        json!({"method": "POST", "uri": uri, "body": body, "now": now,
               "headers": [["X-HubSpot-Signature-v3", sig], ["X-HubSpot-Request-Timestamp", ts]]})
    };
    let r = p
        .call(
            "webhook",
            &call(
                hubspot_signature(uri, body, &ts),
                ts.clone(),
                "2026-03-02T10:01:00Z",
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        r["events"],
        json!([{"id": "hubspot:webhook:100", "account": "500123", "type": "company.property_changed",
        "at": "2026-03-02T10:00:00Z", "data": {"property": "lifecyclestage", "value": "customer", "source": "CRM"}}])
    );
    let r = p
        .call(
            "webhook",
            &call(
                hubspot_signature(uri, "[]", &ts),
                ts.clone(),
                "2026-03-02T10:01:00Z",
            ),
        )
        .await
        .unwrap();
    assert_eq!(r["rejected"], "signature mismatch");
    // The same signed request six minutes later: a replay.
    let r = p
        .call(
            "webhook",
            &call(
                hubspot_signature(uri, body, &ts),
                ts,
                "2026-03-02T10:07:00Z",
            ),
        )
        .await
        .unwrap();
    assert!(
        r["rejected"]
            .as_str()
            .unwrap()
            .contains("older than five minutes")
    );
}

mod full_path {
    //! A Zendesk urgent ticket arrives by webhook and by poll, the
    //! playbook's moment fires once, and one HubSpot task is created for
    //! the account's owner, even though the first attempt times out after
    //! HubSpot created the task.

    use std::sync::Arc;

    use serde_json::{Value, json};
    use touchpilot::api::vendor_hooks::{HooksState, router};
    use touchpilot::deliver::connector::Connectors;
    use touchpilot::deliver::email::Mailer;
    use touchpilot::deliver::webhook::Webhooks;
    use touchpilot::deliver::worker::Worker;
    use touchpilot::engine::Engine;
    use touchpilot::runner::Runner;
    use touchpilot::source::connector::poll;
    use touchpilot::store::sqlite::SqliteStore;
    use touchpilot::store::{OutboxState, Store};
    use touchpilot_plugin::sign;

    use super::t;
    use crate::plugins::library;
    use crate::vendors;

    #[tokio::test]
    async fn an_urgent_zendesk_ticket_becomes_one_hubspot_task_despite_a_timeout() {
        let org = json!([{"id": 509974, "name": "Acme", "external_id": null, "domain_names": [], "tags": [],
            "organization_fields": {"hubspot_company_id": "500123", "csm_email": "dana@vendor.example"},
            "created_at": "2025-11-14T00:14:52Z", "updated_at": "2026-03-01T00:00:00Z"}]);
        let zendesk = vendors::zendesk::start(org, json!([])).await;
        let (companies, contacts, associations) = super::hubspot_data();
        let hubspot = vendors::hubspot::start(companies, contacts, associations).await;

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("playbooks")).unwrap();
        std::fs::create_dir_all(d.join("templates")).unwrap();
        let mut zd = super::zendesk_config(&zendesk.base);
        zd["mapping"] = json!({"owner.email": "organization_fields.csm_email"});
        let mut hs = super::hubspot_config(&hubspot.base);
        hs["company_id_field"] = json!("attributes.fields.hubspot_company_id");
        std::fs::write(
            d.join("touchpilot.yaml"),
            format!(
                "playbooks: playbooks\ntemplates: templates\nconnectors:\n  zendesk: {{ library: {}, config: {zd} }}\n  hubspot: {{ library: {}, config: {hs}, http_timeout_ms: 300 }}\n",
                library("touchpilot_zendesk").display(),
                library("touchpilot_hubspot").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("playbooks/main.yaml"),
            "moments:\n  - id: urgent-ticket\n    on: { event: ticket.created, when: 'event.data.priority == \"urgent\"' }\n    actions:\n      - connector: { name: hubspot, action: create_task, template: urgent-task }\n",
        )
        .unwrap();
        std::fs::write(
            d.join("templates/urgent-task.json.hbs"),
            "{\"subject\": \"Urgent ticket from {{account.name}}\", \"body\": {{json event.data.subject}}, \"priority\": \"high\"}",
        )
        .unwrap();
        let (config, _) = touchpilot::config::load(&d.join("touchpilot.yaml"), &|_| None).unwrap();
        let config = Arc::new(config);
        let engine = Engine::new(config.clone(), Arc::new(|a: &str| a.to_string()));
        let store = SqliteStore::open(&format!("sqlite:{}", d.join("t.db").display()))
            .await
            .unwrap();
        let runner = Arc::new(Runner::new(store, engine));
        let connectors = Connectors::load(&config.connectors).await;
        let source = connectors.host.get("zendesk").unwrap().clone();

        // The first sync admits Acme silently, its CSM as owner.
        let first = poll(&source, &runner, t("2026-03-02T08:00:00Z"))
            .await
            .unwrap();
        assert_eq!((first.accounts_new, first.events_accepted), (1, 0));
        let acme = runner
            .store
            .load_account("509974")
            .await
            .unwrap()
            .unwrap()
            .state
            .account;
        assert_eq!(acme.owner_email().as_deref(), Some("dana@vendor.example"));

        // An urgent ticket is opened; Zendesk's trigger calls the webhook.
        zendesk.data.lock().unwrap()["tickets"] = json!([
            {"id": 35436, "subject": "Help, my printer is on fire!", "priority": "urgent", "status": "new",
             "organization_id": 509974, "requester_id": 20978392, "tags": [],
             "created_at": "2026-03-02T09:00:00Z", "updated_at": "2026-03-02T09:00:00Z"}]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(Arc::new(HooksState {
            connectors: connectors.clone(),
            runner: runner.clone(),
            wake: Default::default(),
            public_url: base.clone(),
        }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let body = r#"{"ticket_id": "35436"}"#;
        let ts = "2026-03-02T09:00:05Z";
        let signature = sign::base64(&sign::hmac_sha256(
            b"zd-secret",
            &[ts.as_bytes(), body.as_bytes()],
        ));
        let client = reqwest::Client::new();
        let post = |sig: String| {
            client
                .post(format!("{base}/hooks/zendesk"))
                .header("X-Zendesk-Webhook-Signature", sig)
                .header("X-Zendesk-Webhook-Signature-Timestamp", ts)
                .body(body)
                .send()
        };
        let forged = post(signature.replace('A', "B") + "x").await.unwrap();
        assert_eq!(forged.status(), 401);
        let resp = post(signature).await.unwrap();
        assert_eq!(resp.status(), 202);
        let answer: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(answer, json!({"accepted": 1, "duplicates": 0}));

        // The next poll sees the same ticket: stored once.
        let second = poll(&source, &runner, t("2026-03-02T09:01:00Z"))
            .await
            .unwrap();
        assert_eq!(second.events_accepted, 0, "{second:?}");
        assert!(second.events_duplicate >= 1, "{second:?}");

        // The moment fires once: one outbox row for HubSpot.
        let now = t("2026-03-02T09:01:00Z");
        runner.apply_pending(now, 100).await.unwrap();
        let rows = runner.store.list_outbox(10).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].payload["moment"], "urgent-ticket");

        // HubSpot creates the task but never answers: the host times out.
        hubspot
            .hang_after
            .lock()
            .unwrap()
            .push("/crm/v3/objects/tasks");
        let mailer = Mailer::new("file:outbox", "a@b.example", d).unwrap();
        let webhooks =
            Webhooks::new(Default::default(), std::time::Duration::from_secs(1)).unwrap();
        let mut worker = Worker::new(mailer, webhooks, None, Default::default());
        worker.connectors = Some(connectors.clone());
        let d1 = worker
            .deliver_due(&runner.store, now, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d1.retried, 1, "{d1:?}");
        let row = &runner.store.list_outbox(10).await.unwrap()[0];
        assert!(
            row.last_error
                .as_deref()
                .unwrap()
                .contains("no answer within 300ms"),
            "{row:?}"
        );
        assert_eq!(
            hubspot.data.lock().unwrap()["tasks"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        // The retry finds the task by its key instead of creating another.
        let later = t("2026-03-02T10:00:00Z");
        let d2 = worker
            .deliver_due(&runner.store, later, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d2.sent, 1, "{d2:?}");
        let row = &runner.store.list_outbox(10).await.unwrap()[0];
        assert_eq!((row.state, row.attempts), (OutboxState::Sent, 2));
        let tasks = hubspot.data.lock().unwrap()["tasks"].clone();
        assert_eq!(tasks.as_array().unwrap().len(), 1);
        let task = &tasks[0]["properties"];
        assert_eq!(task["hs_task_subject"], "Urgent ticket from Acme");
        assert_eq!(task["hs_task_body"], "Help, my printer is on fire!");
        assert_eq!(task["hubspot_owner_id"], "64492917");
        assert_eq!(tasks[0]["associations"][0]["to"]["id"], "500123");
        let creates = hubspot
            .seen("/crm/v3/objects/tasks")
            .into_iter()
            .filter(|r| r.path() == "/crm/v3/objects/tasks")
            .count();
        assert_eq!(
            creates, 1,
            "one create request, then a search that found it"
        );
    }
}

mod sources {
    //! A HubSpot source through the daemon: the first sync admits
    //! companies silently, a later change is an `account.updated` event,
    //! and a new champion a `champion.changed` event, each stored once
    //! however often the overlap window re-reads it.

    use std::sync::Arc;

    use serde_json::json;
    use touchpilot::deliver::connector::Connectors;
    use touchpilot::engine::Engine;
    use touchpilot::runner::Runner;
    use touchpilot::source::connector::poll;
    use touchpilot::store::Store;
    use touchpilot::store::sqlite::SqliteStore;

    use super::t;
    use crate::plugins::library;
    use crate::vendors;

    #[tokio::test]
    async fn a_new_champion_in_hubspot_is_one_champion_changed_event() {
        let (companies, contacts, associations) = super::hubspot_data();
        let hubspot = vendors::hubspot::start(companies, contacts, associations).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("playbooks")).unwrap();
        std::fs::create_dir_all(d.join("templates")).unwrap();
        std::fs::write(
            d.join("touchpilot.yaml"),
            format!(
                "playbooks: playbooks\ntemplates: templates\nconnectors:\n  hubspot: {{ library: {}, config: {} }}\n",
                library("touchpilot_hubspot").display(),
                super::hubspot_config(&hubspot.base)
            ),
        )
        .unwrap();
        // A greeting on entry: it must not fire for the first sync's accounts.
        std::fs::write(
            d.join("playbooks/main.yaml"),
            "moments:\n  - id: welcome\n    on: { event: segment.entered }\n    actions:\n      - connector: { name: hubspot, action: create_note }\n",
        )
        .unwrap();
        let (config, _) = touchpilot::config::load(&d.join("touchpilot.yaml"), &|_| None).unwrap();
        let config = Arc::new(config);
        let engine = Engine::new(config.clone(), Arc::new(|a: &str| a.to_string()));
        let store = SqliteStore::open(&format!("sqlite:{}", d.join("t.db").display()))
            .await
            .unwrap();
        let runner = Runner::new(store, engine);
        let connectors = Connectors::load(&config.connectors).await;
        let source = connectors.host.get("hubspot").unwrap().clone();

        let first = poll(&source, &runner, t("2026-03-02T08:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            (first.pages, first.accounts_new, first.events_accepted),
            (2, 3, 2)
        );
        let cursor = runner.store.cursor("hubspot").await.unwrap().unwrap();
        assert_eq!(
            (&cursor["cursor"]["after"], &cursor["caught_up"]),
            (&json!(null), &json!(true))
        );
        // Every company of the first sync, over both pages, entered silently.
        let events = runner.store.pending_events(10).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
        assert_eq!(kinds, ["deal.created", "deal.updated"]);
        runner
            .store
            .set_aside(&events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .await
            .unwrap();
        let admitted = runner.store.list_outbox(10).await.unwrap();
        assert!(admitted.is_empty(), "{admitted:?}");
        let acme = runner
            .store
            .load_account("500123")
            .await
            .unwrap()
            .unwrap()
            .state
            .account;
        assert_eq!(
            acme.contacts()
                .iter()
                .find(|c| c.role.as_deref() == Some("champion"))
                .unwrap()
                .email,
            "ann@acme.example"
        );

        // Cy becomes the champion; HubSpot marks Acme modified.
        {
            let mut data = hubspot.data.lock().unwrap();
            data["associations"]["500123"] = json!([[9001, "Billing contact"], [9002, "Champion"]]);
            data["companies"][0]["properties"]["hs_lastmodifieddate"] =
                json!("2026-03-02T08:30:00.000Z");
        }
        for now in ["2026-03-02T09:00:00Z", "2026-03-02T09:01:00Z"] {
            poll(&source, &runner, t(now)).await.unwrap();
        }
        let pending = runner.store.pending_events(10).await.unwrap();
        let kinds: Vec<(&str, &str)> = pending
            .iter()
            .map(|e| (e.event.kind.as_str(), e.event.account.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("account.updated", "500123"),
                ("champion.changed", "500123"),
                ("sponsor.changed", "500123")
            ]
        );
        assert_eq!(
            pending[1].event.data,
            json!({"from": "ann@acme.example", "to": "cy@acme.example"})
        );
        assert_eq!(
            pending[2].event.data,
            json!({"from": "cy@acme.example", "to": null})
        );
    }

    /// HubSpot: a contact's new label leaves the company's
    /// `hs_lastmodifieddate` alone; HubSpot's `company.associationChange`
    /// webhook makes the daemon read the company again, and the new
    /// champion is one event.
    #[tokio::test]
    async fn a_hubspot_association_change_webhook_brings_the_new_champion() {
        let (companies, contacts, associations) = super::hubspot_data();
        let hubspot = vendors::hubspot::start(companies, contacts, associations).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("playbooks")).unwrap();
        std::fs::create_dir_all(d.join("templates")).unwrap();
        std::fs::write(
            d.join("touchpilot.yaml"),
            format!(
                "playbooks: playbooks\ntemplates: templates\nconnectors:\n  hubspot: {{ library: {}, config: {} }}\n",
                library("touchpilot_hubspot").display(),
                super::hubspot_config(&hubspot.base)
            ),
        )
        .unwrap();
        let (config, _) = touchpilot::config::load(&d.join("touchpilot.yaml"), &|_| None).unwrap();
        let config = Arc::new(config);
        let engine = Engine::new(config.clone(), Arc::new(|a: &str| a.to_string()));
        let store = SqliteStore::open(&format!("sqlite:{}", d.join("t.db").display()))
            .await
            .unwrap();
        let runner = Arc::new(Runner::new(store, engine));
        let connectors = Connectors::load(&config.connectors).await;
        let source = connectors.host.get("hubspot").unwrap().clone();
        poll(&source, &runner, t("2026-03-02T08:00:00Z"))
            .await
            .unwrap();
        let seen = runner.store.pending_events(10).await.unwrap();
        runner
            .store
            .set_aside(&seen.iter().map(|e| e.seq).collect::<Vec<_>>())
            .await
            .unwrap();

        hubspot.data.lock().unwrap()["associations"]["500123"] =
            json!([[9001, "Billing contact"], [9002, "Champion"]]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = touchpilot::api::vendor_hooks::router(Arc::new(
            touchpilot::api::vendor_hooks::HooksState {
                connectors: connectors.clone(),
                runner: runner.clone(),
                wake: Default::default(),
                public_url: base.clone(),
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let body = r#"[{"eventId":501,"subscriptionId":9,"portalId":62515,"appId":1,"occurredAt":1772445600000,"subscriptionType":"company.associationChange","attemptNumber":0,"changeSource":"USER","associationType":"COMPANY_TO_CONTACT","fromObjectId":500123,"toObjectId":9002,"associationRemoved":false,"isPrimaryAssociation":false}]"#;
        let ts = jiff::Timestamp::now().as_millisecond().to_string();
        let uri = format!("{base}/hooks/hubspot");
        let resp = reqwest::Client::new()
            .post(&uri)
            .header(
                "X-HubSpot-Signature-v3",
                super::hubspot_signature(&uri, body, &ts),
            )
            .header("X-HubSpot-Request-Timestamp", &ts)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let pending = runner.store.pending_events(10).await.unwrap();
        let kinds: Vec<&str> = pending.iter().map(|e| e.event.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "company.association_changed",
                "account.updated",
                "champion.changed",
                "sponsor.changed"
            ]
        );
        assert_eq!(
            pending[2].event.data,
            json!({"from": "ann@acme.example", "to": "cy@acme.example"})
        );
    }

    /// Salesforce: a contact role changes without touching the Account's
    /// SystemModstamp; the role's own SystemModstamp brings the account
    /// back, and the new champion is one event.
    #[tokio::test]
    async fn a_new_champion_in_salesforce_is_seen_through_its_role() {
        let (accounts, contacts, roles) = super::salesforce_data();
        let sf = vendors::salesforce::start(accounts, contacts, roles).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("playbooks")).unwrap();
        std::fs::create_dir_all(d.join("templates")).unwrap();
        std::fs::write(
                d.join("touchpilot.yaml"),
                format!(
                    "playbooks: playbooks\ntemplates: templates\nconnectors:\n  salesforce: {{ library: {}, config: {} }}\n",
                    library("touchpilot_salesforce").display(),
                    super::salesforce_config(&sf.base)
                ),
            )
            .unwrap();
        let (config, _) = touchpilot::config::load(&d.join("touchpilot.yaml"), &|_| None).unwrap();
        let config = Arc::new(config);
        let engine = Engine::new(config.clone(), Arc::new(|a: &str| a.to_string()));
        let store = SqliteStore::open(&format!("sqlite:{}", d.join("t.db").display()))
            .await
            .unwrap();
        let runner = Runner::new(store, engine);
        let connectors = Connectors::load(&config.connectors).await;
        let source = connectors.host.get("salesforce").unwrap().clone();
        let first = poll(&source, &runner, t("2026-03-02T08:00:00Z"))
            .await
            .unwrap();
        assert_eq!(first.accounts_new, 3, "{first:?}");
        let seen = runner.store.pending_events(10).await.unwrap();
        runner
            .store
            .set_aside(&seen.iter().map(|e| e.seq).collect::<Vec<_>>())
            .await
            .unwrap();

        // Cy becomes the champion; only the roles' SystemModstamp moves.
        {
            let mut data = sf.data.lock().unwrap();
            data["roles"][0]["Role"] = json!("Billing Contact");
            data["roles"][0]["SystemModstamp"] = json!("2026-03-02T08:30:00.000+0000");
            data["roles"][1]["Role"] = json!("Champion");
            data["roles"][1]["SystemModstamp"] = json!("2026-03-02T08:30:00.000+0000");
        }
        for now in ["2026-03-02T09:00:00Z", "2026-03-02T09:01:00Z"] {
            poll(&source, &runner, t(now)).await.unwrap();
        }
        let pending = runner.store.pending_events(10).await.unwrap();
        let kinds: Vec<&str> = pending.iter().map(|e| e.event.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["account.updated", "champion.changed", "sponsor.changed"]
        );
        assert_eq!(pending[1].event.account, "001D000000IRFmaIAH");
        assert_eq!(
            pending[1].event.data,
            json!({"from": "ann@acme.example", "to": "cy@acme.example"})
        );
    }
}

fn salesforce_data() -> (Value, Value, Value) {
    let accounts = json!([
        {"attributes": {"type": "Account", "url": "/services/data/v66.0/sobjects/Account/001D000000IRFmaIAH"},
         "Id": "001D000000IRFmaIAH", "Name": "Acme", "OwnerId": "005D0000001AbcD", "Industry": "Fintech", "Type": "Customer",
         "Owner": {"attributes": {"type": "User"}, "Name": "Dana Lee", "Email": "dana@vendor.example"},
         "SystemModstamp": "2026-01-02T00:00:00.000+0000"},
        {"attributes": {"type": "Account"}, "Id": "001D000000IRFmbIAH", "Name": "Globex", "OwnerId": "005D0000001AbcD",
         "Industry": null, "Type": null, "Owner": {"Name": "Dana Lee", "Email": "dana@vendor.example"},
         "SystemModstamp": "2026-01-03T00:00:00.000+0000"},
        {"attributes": {"type": "Account"}, "Id": "001D000000IRFmcIAH", "Name": "Initech", "OwnerId": "005D0000001AbcD",
         "Industry": null, "Type": null, "Owner": {"Name": "Dana Lee", "Email": "dana@vendor.example"},
         "SystemModstamp": "2026-01-04T00:00:00.000+0000"}
    ]);
    let contacts = json!([
        {"attributes": {"type": "Contact"}, "Id": "003D000000QOpfA", "AccountId": "001D000000IRFmaIAH",
         "Email": "ann@acme.example", "FirstName": "Ann", "LastName": "Lee"},
        {"attributes": {"type": "Contact"}, "Id": "003D000000QOpfB", "AccountId": "001D000000IRFmaIAH",
         "Email": "cy@acme.example", "FirstName": "Cy", "LastName": "Oh"}
    ]);
    let roles = json!([
        {"attributes": {"type": "AccountContactRole"}, "AccountId": "001D000000IRFmaIAH", "ContactId": "003D000000QOpfA", "Role": "Champion", "Id": "02ZD0001", "SystemModstamp": "2026-01-02T00:00:00.000+0000"},
        {"attributes": {"type": "AccountContactRole"}, "AccountId": "001D000000IRFmaIAH", "ContactId": "003D000000QOpfB", "Role": "Executive Sponsor", "Id": "02ZD0002", "SystemModstamp": "2026-01-02T00:00:00.000+0000"}
    ]);
    (accounts, contacts, roles)
}

fn salesforce_config(base: &str) -> Value {
    json!({"instance_url": base, "login_url": base, "access_token": "sf-1",
           "oauth": {"client_id": "ck", "client_secret": "cs", "refresh_token": "sf-refresh"},
           "start_time": "2026-01-01T00:00:00Z"})
}

#[tokio::test]
async fn salesforce_passes_the_conformance_suite() {
    let (accounts, contacts, roles) = salesforce_data();
    let mock = vendors::salesforce::start(accounts, contacts, roles).await;
    conformance(Case {
        stem: "touchpilot_salesforce",
        config: salesforce_config(&mock.base),
        mock,
        action: "create_task",
        content: json!({"subject": "Call Acme about renewal", "body": "Usage down 30%", "priority": "high"}),
        account: json!({"id": "001D000000IRFmaIAH", "owner": {"salesforce_id": "005D0000001AbcD"}}),
        created: |m| m.data.lock().unwrap()["tasks"].as_object().unwrap().len(),
    })
    .await;
}

#[tokio::test]
async fn salesforce_refreshes_its_session_and_reads_accounts_with_soql_and_one_composite_call() {
    let (accounts, contacts, roles) = salesforce_data();
    let mock = vendors::salesforce::start(accounts, contacts, roles).await;
    let p = Plugin::load(
        "salesforce",
        &library("touchpilot_salesforce"),
        &salesforce_config(&mock.base),
        limits(),
    )
    .unwrap();
    let now = json!("2026-03-02T12:00:00Z");
    let r1 = p
        .call("poll", &json!({"cursor": null, "now": now}))
        .await
        .unwrap();
    assert_eq!(r1["more"], true);
    assert_eq!(
        r1["accounts"][0],
        json!({"id": "001D000000IRFmaIAH", "name": "Acme",
        "owner": {"name": "Dana Lee", "email": "dana@vendor.example", "salesforce_id": "005D0000001AbcD"},
        "attributes": {"industry": "Fintech", "type": "Customer", "salesforce_account_id": "001D000000IRFmaIAH"},
        "contacts": [
            {"email": "ann@acme.example", "name": "Ann Lee", "salesforce_contact_id": "003D000000QOpfA", "role": "champion"},
            {"email": "cy@acme.example", "name": "Cy Oh", "salesforce_contact_id": "003D000000QOpfB", "role": "sponsor"}]})
    );
    let r2 = p
        .call("poll", &json!({"cursor": r1["cursor"], "now": now}))
        .await
        .unwrap();
    assert_eq!(r2["more"], false);
    assert_eq!(r2["accounts"][0]["name"], "Initech");
    // The expired session was refreshed once; the query is SOQL with an
    // unquoted DateTime; the second page follows nextRecordsUrl.
    assert_eq!(mock.seen("/services/oauth2/token").len(), 1);
    let queries = mock.seen("/services/data/v66.0/query");
    assert_eq!(queries[0].header("authorization"), Some("Bearer sf-1"));
    assert_eq!(queries[1].header("authorization"), Some("Bearer sf-2"));
    let q = queries[1].query("q").unwrap();
    assert!(q.starts_with("SELECT+Id%2C+SystemModstamp%2C+"), "{q}");
    assert!(q.ends_with("+FROM+Account+WHERE+SystemModstamp+%3E%3D+2026-01-01T00%3A00%3A00Z+ORDER+BY+SystemModstamp+ASC"), "{q}");
    // Tasks and contact roles are read by SystemModstamp too; the
    // accounts' second batch follows nextRecordsUrl.
    let texts: Vec<String> = queries.iter().filter_map(|q| q.query("q")).collect();
    for object in ["Task", "AccountContactRole"] {
        let tail = format!(
            "+FROM+{object}+WHERE+SystemModstamp+%3E%3D+2026-01-01T00%3A00%3A00Z+ORDER+BY+SystemModstamp+ASC"
        );
        assert!(
            texts.iter().any(|q| q.ends_with(&tail)),
            "{object}: {texts:?}"
        );
    }
    assert!(
        queries
            .iter()
            .any(|q| q.path().starts_with("/services/data/v66.0/query/01gRO"))
    );
    let composite = mock.seen("/services/data/v66.0/composite");
    assert_eq!(composite.len(), 2, "one composite call per page");
    let sub = composite[0].json()["compositeRequest"].clone();
    assert_eq!(
        (sub[0]["method"].as_str(), sub[0]["referenceId"].as_str()),
        (Some("GET"), Some("contacts"))
    );
    assert!(sub[1]["url"].as_str().unwrap().contains("FROM+AccountContactRole+WHERE+AccountId+IN+%28%27001D000000IRFmaIAH%27%2C%27001D000000IRFmbIAH%27%29"));
    // Caught up: the next poll starts `overlap` before the last change.
    assert_eq!(r2["cursor"]["accounts"]["since"], "2026-01-03T23:55:00Z");
    // Tasks on accounts are events, read by SOQL on Task in the same polls.
    let events: Vec<&Value> = [&r1, &r2]
        .iter()
        .flat_map(|r| r["events"].as_array().unwrap())
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "salesforce:task:00TD00000045abcA:created",
            "salesforce:task:00TD00000045abcA:2026-01-06T09:00:00Z"
        ]
    );
    assert_eq!(
        (
            events[1]["account"].as_str(),
            events[1]["data"]["closed"].as_bool()
        ),
        (Some("001D000000IRFmaIAH"), Some(true))
    );

    // A task: upserted by the action key, so a retry is an update (204).
    let act = json!({"action": "create_task", "key": "tp-77", "account": {"id": "001D000000IRFmaIAH", "owner": {"salesforce_id": "005D0000001AbcD"}},
        "content": {"subject": "Call Acme", "priority": "urgent"}, "at": "2026-03-02T10:00:00Z", "now": "2026-03-02T10:00:00Z"});
    assert_eq!(p.call("act", &act).await.unwrap()["created"], true);
    let upsert = mock.seen("/services/data/v66.0/sobjects/Task/Touchpilot_Key__c/tp-77");
    assert_eq!(upsert[0].method, "PATCH");
    assert_eq!(
        upsert[0].json(),
        json!({"Subject": "Call Acme", "Description": "", "ActivityDate": "2026-03-05",
        "Status": "Not Started", "Priority": "High", "WhatId": "001D000000IRFmaIAH", "OwnerId": "005D0000001AbcD"})
    );
    let again = p.call("act", &act).await.unwrap();
    assert_eq!(again, json!({"id": "00T000000000000001", "created": false}));
    // A validation error is fatal and carries Salesforce's errorCode.
    let mut bad = act.clone();
    bad["key"] = json!("tp-78");
    bad["content"]["subject"] = json!("");
    let e = p.call("act", &bad).await.unwrap_err();
    assert!(
        !e.retryable() && e.to_string().contains("REQUIRED_FIELD_MISSING"),
        "{e}"
    );
}

fn jira_issues() -> Value {
    let issue = |id: u32, labels: Value, created: &str, updated: &str, priority: &str| {
        json!({"id": id.to_string(), "key": format!("ACME-{id}"), "self": format!("https://acme.atlassian.net/rest/api/3/issue/{id}"),
               "fields": {"summary": format!("Issue {id}"), "labels": labels, "status": {"name": "In Progress"},
                          "priority": {"name": priority}, "issuetype": {"name": "Bug"}, "created": created, "updated": updated}})
    };
    json!([
        issue(
            10001,
            json!(["account-509974"]),
            "2026-01-02T10:00:00.000+0000",
            "2026-01-02T10:00:00.000+0000",
            "Highest"
        ),
        issue(
            10002,
            json!(["account-509975"]),
            "2026-01-02T11:00:00.000+0000",
            "2026-01-03T09:30:00.000+0000",
            "Low"
        ),
        issue(
            10003,
            json!([]),
            "2026-01-04T10:00:00.000+0000",
            "2026-01-04T10:00:00.000+0000",
            "Low"
        ),
    ])
}

fn jira_config(base: &str) -> Value {
    json!({"base_url": base, "email": vendors::jira::EMAIL, "api_token": vendors::jira::TOKEN, "project": "ACME",
           "webhook_secret": "jira-secret", "start_time": "2026-01-01T00:00:00Z"})
}

#[tokio::test]
async fn jira_passes_the_conformance_suite() {
    let mock = vendors::jira::start(jira_issues()).await;
    conformance(Case {
        stem: "touchpilot_jira",
        config: jira_config(&mock.base),
        mock,
        action: "create_ticket",
        content: json!({"summary": "Follow up: urgent ticket on Acme", "body": "Opened by Touchpilot."}),
        account: json!({"id": "509974"}),
        created: |m| m.data.lock().unwrap()["created"].as_u64().unwrap() as usize,
    })
    .await;
}

#[tokio::test]
async fn jira_searches_on_updated_with_jql_pages_and_verifies_webhooks() {
    let mock = vendors::jira::start(jira_issues()).await;
    let p = Plugin::load(
        "jira",
        &library("touchpilot_jira"),
        &jira_config(&mock.base),
        limits(),
    )
    .unwrap();
    let now = json!("2026-03-02T12:00:00Z");
    let r1 = p
        .call("poll", &json!({"cursor": null, "now": now}))
        .await
        .unwrap();
    assert_eq!(r1["more"], true);
    let r2 = p
        .call("poll", &json!({"cursor": r1["cursor"], "now": now}))
        .await
        .unwrap();
    assert_eq!(r2["more"], false);
    let ids: Vec<&str> = [&r1, &r2]
        .iter()
        .flat_map(|r| {
            r["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        ids,
        [
            "jira:issue:10001:created",
            "jira:issue:10002:created",
            "jira:issue:10002:2026-01-03T09:30:00Z"
        ]
    );
    assert_eq!(r1["events"][0]["data"]["priority"], "highest");
    let searches = mock.seen("/rest/api/3/search/jql");
    assert_eq!(
        searches[0].json(),
        json!({"jql": "updated >= \"2026-01-01 00:00\" ORDER BY updated ASC",
        "fields": ["summary", "status", "priority", "issuetype", "labels", "created", "updated"], "maxResults": 50})
    );
    assert_eq!(searches[1].json()["nextPageToken"], "tok2");
    // JQL has minute precision: the next poll reads an overlap window again.
    assert_eq!(r2["cursor"]["since"], "2026-01-04T09:58:00Z");

    // Issue create: ADF description, the key as a label, searched first.
    let r = p
        .call(
            "act",
            &json!({"action": "create_task", "key": "tp-9", "account": {"id": "509974"},
            "content": {"subject": "Call Acme", "body": "Urgent"}, "now": "2026-03-02T10:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"id": "ACME-101", "created": true}));
    let create = mock.seen("/rest/api/3/issue")[0].json();
    assert_eq!(
        create["fields"]["labels"],
        json!(["touchpilot", "tp-9", "account-509974"])
    );
    assert_eq!(create["fields"]["issuetype"], json!({"name": "Task"}));
    let e = p
        .call(
            "act",
            &json!({"action": "create_ticket", "key": "tp-10", "account": {"id": "509974"},
            "content": {"summary": ""}, "now": "2026-03-02T10:00:00Z"}),
        )
        .await
        .unwrap_err();
    assert!(
        !e.retryable() && e.to_string().contains("You must specify a summary"),
        "{e}"
    );

    // Webhooks: X-Hub-Signature over the raw body.
    let body = json!({"timestamp": 1772445600000i64, "webhookEvent": "jira:issue_updated", "issue": jira_issues()[1]}).to_string();
    let sig = format!(
        "sha256={}",
        touchpilot_plugin::sign::hex(&touchpilot_plugin::sign::hmac_sha256(
            b"jira-secret",
            &[body.as_bytes()]
        ))
    );
    let hook = |sig: &str| json!({"method": "POST", "uri": "http://x/hooks/jira", "headers": [["X-Hub-Signature", sig]], "body": body, "now": now});
    let r = p.call("webhook", &hook(&sig)).await.unwrap();
    assert_eq!(
        r["events"][1]["id"],
        "jira:issue:10002:2026-01-03T09:30:00Z"
    );
    let r = p.call("webhook", &hook("sha256=00")).await.unwrap();
    assert_eq!(r["rejected"], "signature mismatch");

    // Wrong credentials are fatal and say what to check.
    let mut bad = jira_config(&mock.base);
    bad["api_token"] = json!("nope");
    let p = Plugin::load("jira", &library("touchpilot_jira"), &bad, limits()).unwrap();
    let e = p
        .call("poll", &json!({"cursor": null, "now": now}))
        .await
        .unwrap_err();
    assert!(
        !e.retryable()
            && e.to_string().contains("User is not logged in.")
            && e.to_string().contains("check `email` and `api_token`"),
        "{e}"
    );
}

mod daemon {
    //! The whole daemon in-process with connectors: at start it loads
    //! them, polls Zendesk (Acme enters silently), serves Zendesk's webhook
    //! beside the API, and its worker creates the HubSpot task the moment
    //! asks for. The real clock: waits are bounded polls of the vendors.

    use std::sync::Arc;
    use std::time::Duration;

    use crate::support::until;

    use jiff::Timestamp;
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;
    use touchpilot_plugin::sign;

    use crate::plugins::library;
    use crate::vendors::{self, Mock};

    fn tasks(m: &Mock) -> Vec<Value> {
        m.data.lock().unwrap()["tasks"].as_array().unwrap().clone()
    }

    #[tokio::test]
    async fn the_daemon_polls_serves_vendor_webhooks_and_delivers_connector_actions() {
        let start = Timestamp::now();
        let org = json!([{"id": 509974, "name": "Acme", "external_id": null, "domain_names": [], "tags": [],
            "organization_fields": {"hubspot_company_id": "500123"},
            "created_at": "2025-11-14T00:14:52Z", "updated_at": (start - jiff::SignedDuration::from_hours(1)).to_string()}]);
        let zendesk = vendors::zendesk::start(org, json!([])).await;
        let (companies, contacts, associations) = super::hubspot_data();
        let hubspot = vendors::hubspot::start(companies, contacts, associations).await;

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("playbooks")).unwrap();
        std::fs::create_dir_all(d.join("templates")).unwrap();
        let mut zd = super::zendesk_config(&zendesk.base);
        zd["start_time"] = json!(start.as_second() - 86_400);
        let mut hs = super::hubspot_config(&hubspot.base);
        hs["company_id_field"] = json!("attributes.fields.hubspot_company_id");
        std::fs::write(
            d.join("touchpilot.yaml"),
            format!(
                "playbooks: playbooks\ntemplates: templates\nstore: \"sqlite:{}\"\nconnectors:\n  zendesk: {{ library: {}, config: {zd} }}\n  hubspot: {{ library: {}, config: {hs} }}\n",
                d.join("t.db").display(),
                library("touchpilot_zendesk").display(),
                library("touchpilot_hubspot").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("playbooks/main.yaml"),
            "moments:\n  - id: urgent-ticket\n    on: { event: ticket.created, when: 'event.data.priority == \"urgent\"' }\n    actions:\n      - connector: { name: hubspot, action: create_task, template: urgent-task }\n",
        )
        .unwrap();
        std::fs::write(
            d.join("templates/urgent-task.json.hbs"),
            "{\"subject\": \"Urgent: {{event.data.subject}}\"}",
        )
        .unwrap();
        let (config, _) = touchpilot::config::load(&d.join("touchpilot.yaml"), &|_| None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(touchpilot::app::run(
            Arc::new(config),
            listener,
            shutdown.clone(),
        ));

        // The source loop's first poll reads the organization export.
        until(
            Duration::from_secs(20),
            "the first Zendesk poll",
            async || !zendesk.seen("/api/v2/incremental/tickets").is_empty(),
        )
        .await;

        // A ticket opened a second from now; Zendesk calls the webhook.
        let created = Timestamp::from_second(Timestamp::now().as_second() + 1).unwrap();
        zendesk.data.lock().unwrap()["tickets"] = json!([{"id": 35436, "subject": "Printer on fire", "priority": "urgent",
            "status": "new", "organization_id": 509974, "requester_id": 1, "tags": [],
            "created_at": created.to_string(), "updated_at": created.to_string()}]);
        let body = r#"{"ticket_id": 35436}"#;
        let ts = Timestamp::now().to_string();
        let sig = sign::base64(&sign::hmac_sha256(
            b"zd-secret",
            &[ts.as_bytes(), body.as_bytes()],
        ));
        let resp = reqwest::Client::new()
            .post(format!("{base}/hooks/zendesk"))
            .header("X-Zendesk-Webhook-Signature", sig)
            .header("X-Zendesk-Webhook-Signature-Timestamp", ts)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{:?}", resp.text().await);

        until(Duration::from_secs(20), "the HubSpot task", async || {
            !tasks(&hubspot).is_empty()
        })
        .await;
        let t = tasks(&hubspot);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0]["properties"]["hs_task_subject"],
            "Urgent: Printer on fire"
        );
        assert_eq!(t[0]["associations"][0]["to"]["id"], "500123");

        // The plugins' figures are on /metrics with the daemon's own.
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for connector in ["hubspot", "zendesk"] {
            assert!(
                metrics.contains(&format!(
                    "touchpilot_connector_up{{connector=\"{connector}\"}} 1\n"
                )),
                "{metrics}"
            );
            let requests = metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "touchpilot_connector_reported_total{{connector=\"{connector}\",name=\"http_requests\"}} "
                    ))
                })
                .unwrap_or_else(|| panic!("no http_requests for {connector}:\n{metrics}"));
            assert!(
                requests.parse::<f64>().unwrap() >= 1.0,
                "{connector}: {requests}"
            );
        }

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(tasks(&hubspot).len(), 1);
    }
}
