//! Zendesk Support as a Touchpilot connector
//! (https://developer.zendesk.com/api-reference/).
//!
//! - Source: organizations are accounts (time-based incremental export,
//!   read again over an overlap window: Zendesk leaves out the last
//!   minute's changes), tickets are `ticket.created` / `ticket.updated`
//!   events (cursor-based incremental export). Event ids are the ticket id
//!   and its `updated_at`, so a webhook and a poll store a change once.
//! - Actions: `create_ticket` (with Zendesk's `Idempotency-Key` and the
//!   action key as `external_id`), `update_field` (an organization field).
//! - Webhook: a trigger's webhook, verified with Zendesk's signature
//!   (`base64(HMAC-SHA256(timestamp + body))`), carrying the ticket id;
//!   the ticket is then read from the API, so both routes see the same data.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use touchpilot_plugin::{
    Connector, Error, Host, HttpRequest, HttpResponse, caps, declare_connector, mapping, sign,
};

/// The account fields an organization fills unless configured otherwise.
const DEFAULT_MAPPING: &[(&str, &str)] = &[
    ("name", "name"),
    ("attributes.zendesk_organization_id", "id"),
    ("attributes.external_id", "external_id"),
    ("attributes.domains", "domain_names"),
    ("attributes.tags", "tags"),
    ("attributes.fields", "organization_fields"),
];

const ACTIONS: &str = "create_ticket, update_field";

/// The connector's `config:` in touchpilot.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://{subdomain}.zendesk.com` is the API's address.
    pub subdomain: Option<String>,
    /// The API's address, instead of `subdomain` (tests, proxies).
    pub base_url: Option<String>,
    /// API token authentication: the agent's email and the token.
    pub email: Option<String>,
    pub token: Option<String>,
    /// OAuth access token, instead of `email` and `token`.
    pub oauth_token: Option<String>,
    /// The webhook's signing secret; webhooks are refused without it.
    pub webhook_secret: Option<String>,
    /// Prefixed to organization ids to make account ids.
    #[serde(default)]
    pub account_prefix: String,
    /// Unix seconds to start the first sync from (default: now minus the overlap).
    pub start_time: Option<i64>,
    /// Seconds of organization changes read again on each poll (default 300).
    #[serde(default = "default_overlap")]
    pub overlap_seconds: i64,
    /// Account field ← organization field; see `touchpilot_plugin::mapping`.
    #[serde(default)]
    pub mapping: BTreeMap<String, Option<String>>,
}

fn default_overlap() -> i64 {
    300
}

pub struct Zendesk {
    host: Host,
    base: String,
    auth: String,
    secret: Option<String>,
    prefix: String,
    start_time: Option<i64>,
    overlap: i64,
    mapping: Vec<(String, String)>,
}

fn config_error(e: impl std::fmt::Display) -> Error {
    Error::fatal(format!("config: {e}"))
}

fn unix(ts: &str) -> Result<i64, Error> {
    ts.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| Error::fatal(format!("bad time `{ts}`: {e}")))
}

impl Zendesk {
    pub fn new(host: Host, config: Value) -> Result<Zendesk, Error> {
        let c: Config = serde_json::from_value(config).map_err(config_error)?;
        let base = match (&c.base_url, &c.subdomain) {
            (Some(b), _) => b.trim_end_matches('/').to_string(),
            (None, Some(s)) => format!("https://{s}.zendesk.com"),
            (None, None) => return Err(config_error("`subdomain` (or `base_url`) is required")),
        };
        let auth = match (&c.oauth_token, &c.email, &c.token) {
            (Some(t), _, _) => format!("Bearer {t}"),
            (None, Some(e), Some(t)) => format!(
                "Basic {}",
                sign::base64(format!("{e}/token:{t}").as_bytes())
            ),
            _ => {
                return Err(config_error(
                    "give `email` and `token` (API token) or `oauth_token`",
                ));
            }
        };
        if c.overlap_seconds < 60 {
            return Err(config_error(
                "`overlap_seconds` must be at least 60 (Zendesk's export leaves out the last minute)",
            ));
        }
        Ok(Zendesk {
            host,
            base,
            auth,
            secret: c.webhook_secret,
            prefix: c.account_prefix,
            start_time: c.start_time,
            overlap: c.overlap_seconds,
            mapping: mapping::merged(DEFAULT_MAPPING, &c.mapping),
        })
    }

    fn send(&self, req: HttpRequest, what: &str) -> Result<HttpResponse, Error> {
        let resp = self.host.http(
            &req.header("Authorization", &self.auth)
                .header("Accept", "application/json"),
        )?;
        if resp.status == 401 {
            return Err(Error::fatal(format!(
                "{what}: HTTP 401 {}: check `email` and `token` (or `oauth_token`)",
                touchpilot_plugin::wire::excerpt(&resp.body)
            )));
        }
        resp.check(&format!("zendesk {what}"))?;
        Ok(resp)
    }

    fn get(&self, path_and_query: &str, what: &str) -> Result<Value, Error> {
        let url = if path_and_query.starts_with("http") {
            path_and_query.to_string()
        } else {
            format!("{}{path_and_query}", self.base)
        };
        self.send(HttpRequest::new("GET", url), what)?.json()
    }

    /// The account of an organization.
    pub fn account(&self, org: &Value) -> Option<Value> {
        let id = org.get("id")?.as_u64()?;
        let mut out = Map::new();
        out.insert("id".into(), json!(format!("{}{id}", self.prefix)));
        mapping::apply(&self.mapping, org, &mut out);
        Some(Value::Object(out))
    }

    /// The events of a ticket as it is now: `ticket.created` (once per
    /// ticket) and, once it changed, `ticket.updated` per `updated_at`.
    pub fn ticket_events(&self, t: &Value) -> Result<Vec<Value>, Error> {
        let (Some(id), Some(org)) = (
            t.get("id").and_then(Value::as_u64),
            t.get("organization_id").and_then(Value::as_u64),
        ) else {
            // A ticket of no organization belongs to no account.
            return Ok(vec![]);
        };
        let created = t.get("created_at").and_then(Value::as_str).unwrap_or("");
        let updated = t
            .get("updated_at")
            .and_then(Value::as_str)
            .unwrap_or(created);
        unix(created)?;
        let account = format!("{}{org}", self.prefix);
        let mut data = Map::new();
        data.insert("ticket_id".into(), json!(id));
        for f in [
            "subject",
            "priority",
            "status",
            "type",
            "tags",
            "requester_id",
            "external_id",
            "via",
        ] {
            if let Some(v) = t.get(f) {
                data.insert(f.into(), v.clone());
            }
        }
        let data = Value::Object(data);
        let mut out = vec![json!({
            "id": format!("zendesk:ticket:{id}:created"), "account": account,
            "type": "ticket.created", "at": created, "data": data,
        })];
        if updated != created {
            out.push(json!({
                "id": format!("zendesk:ticket:{id}:{updated}"), "account": account,
                "type": "ticket.updated", "at": updated, "data": data,
            }));
        }
        Ok(out)
    }

    /// One page of each export; `more` while either has pages left.
    fn poll(&self, input: &Value) -> Result<Value, Error> {
        let now = input
            .get("now")
            .and_then(Value::as_str)
            .map(unix)
            .transpose()?
            .unwrap_or(0);
        let first = self.start_time.unwrap_or(now - self.overlap);
        let cursor = input.get("cursor").cloned().unwrap_or(Value::Null);
        let org_start = cursor
            .pointer("/organizations/start_time")
            .and_then(Value::as_i64)
            .unwrap_or(first);
        let after = cursor
            .pointer("/tickets/after")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ticket_start = cursor
            .pointer("/tickets/start_time")
            .and_then(Value::as_i64)
            .unwrap_or(first);

        let orgs = self.get(
            &format!("/api/v2/incremental/organizations.json?start_time={org_start}"),
            "organization export",
        )?;
        let accounts: Vec<Value> = orgs["organizations"]
            .as_array()
            .map(|a| a.iter().filter_map(|o| self.account(o)).collect())
            .unwrap_or_default();
        let orgs_done = orgs["end_of_stream"].as_bool().unwrap_or(true);
        let end_time = orgs["end_time"].as_i64().unwrap_or(org_start);
        // More pages follow from `end_time` exactly; once caught up, the
        // next poll starts `overlap` earlier (the dedup absorbs repeats).
        let next_org_start = if orgs_done {
            (end_time - self.overlap).max(org_start)
        } else {
            end_time
        };

        let path = match &after {
            Some(c) => format!("/api/v2/incremental/tickets/cursor.json?cursor={c}"),
            None => format!("/api/v2/incremental/tickets/cursor.json?start_time={ticket_start}"),
        };
        let tickets = self.get(&path, "ticket export")?;
        let mut events = Vec::new();
        for t in tickets["tickets"].as_array().into_iter().flatten() {
            events.extend(self.ticket_events(t)?);
        }
        let tickets_done = tickets["end_of_stream"].as_bool().unwrap_or(true);
        let next_after = tickets["after_cursor"]
            .as_str()
            .map(str::to_string)
            .or(after);
        Ok(json!({
            "accounts": accounts,
            "events": events,
            "cursor": {
                "organizations": {"start_time": next_org_start},
                "tickets": {"after": next_after, "start_time": ticket_start},
            },
            "more": !(orgs_done && tickets_done),
        }))
    }

    fn act(&self, input: &Value) -> Result<Value, Error> {
        let action = input["action"].as_str().unwrap_or("");
        let key = input["key"]
            .as_str()
            .ok_or_else(|| Error::fatal("act without a `key`"))?;
        let content = &input["content"];
        let account = input["account"]["id"].as_str().unwrap_or("");
        let org_id = account
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.parse::<u64>().ok());
        match action {
            "create_ticket" => {
                let subject = content["subject"].as_str().ok_or_else(|| {
                    Error::fatal("create_ticket: the template must render a `subject`")
                })?;
                let body = content["body"].as_str().unwrap_or(subject);
                let mut ticket = json!({
                    "subject": subject,
                    "comment": {"body": body},
                    "external_id": key,
                    "tags": content.get("tags").cloned().unwrap_or(json!(["touchpilot"])),
                });
                for f in [
                    "priority",
                    "type",
                    "group_id",
                    "assignee_id",
                    "requester_id",
                ] {
                    if let Some(v) = content.get(f) {
                        ticket[f] = v.clone();
                    }
                }
                if let Some(org) = org_id {
                    ticket["organization_id"] = json!(org);
                }
                let resp = self.send(
                    HttpRequest::new("POST", format!("{}/api/v2/tickets.json", self.base))
                        .header("Idempotency-Key", key)
                        .json(&json!({"ticket": ticket})),
                    "create_ticket",
                )?;
                let created = resp.header("x-idempotency-lookup") != Some("hit");
                let body = resp.json()?;
                Ok(json!({"id": body["ticket"]["id"], "created": created}))
            }
            "update_field" => {
                let org = org_id.ok_or_else(|| {
                    Error::fatal(format!(
                        "update_field: account `{account}` is not a Zendesk organization"
                    ))
                })?;
                let field = content["field"].as_str().ok_or_else(|| {
                    Error::fatal("update_field: the template must render `field` and `value`")
                })?;
                // A PUT of one field: repeating it changes nothing.
                self.send(
                    HttpRequest::new("PUT", format!("{}/api/v2/organizations/{org}.json", self.base))
                        .json(&json!({"organization": {"organization_fields": {field: content["value"]}}})),
                    "update_field",
                )?;
                Ok(json!({"id": org, "created": false}))
            }
            other => Err(Error::fatal(format!(
                "zendesk has no action `{other}`; it offers {ACTIONS}"
            ))),
        }
    }

    fn webhook(&self, input: &Value) -> Result<Value, Error> {
        let Some(secret) = &self.secret else {
            return Ok(
                json!({"rejected": "no `webhook_secret` is configured, so no webhook can be verified"}),
            );
        };
        let header = |name: &str| {
            input["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|h| {
                    let (k, v) = (h[0].as_str()?, h[1].as_str()?);
                    k.eq_ignore_ascii_case(name).then_some(v)
                })
        };
        let (Some(signature), Some(ts)) = (
            header("x-zendesk-webhook-signature"),
            header("x-zendesk-webhook-signature-timestamp"),
        ) else {
            return Ok(
                json!({"rejected": "the request is not signed (X-Zendesk-Webhook-Signature missing)"}),
            );
        };
        let body = input["body"].as_str().unwrap_or("");
        let expected = sign::base64(&sign::hmac_sha256(
            secret.as_bytes(),
            &[ts.as_bytes(), body.as_bytes()],
        ));
        if !sign::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Ok(json!({"rejected": "signature mismatch"}));
        }
        let payload: Value = serde_json::from_str(body)
            .map_err(|e| Error::fatal(format!("webhook body is not JSON: {e}")))?;
        let id = payload
            .get("ticket_id")
            .or_else(|| payload.pointer("/ticket/id"))
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .ok_or_else(|| Error::fatal("webhook body has no `ticket_id`; the trigger should send {\"ticket_id\": \"{{ticket.id}}\"}"))?;
        let ticket = self.get(&format!("/api/v2/tickets/{id}.json"), "show ticket")?;
        Ok(json!({"events": self.ticket_events(&ticket["ticket"])?}))
    }
}

impl Connector for Zendesk {
    const NAME: &'static str = "zendesk";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CAPABILITIES: u64 = caps::SOURCE | caps::ACTIONS | caps::WEBHOOK;

    fn open(host: Host, config: Value) -> Result<Self, Error> {
        Zendesk::new(host, config)
    }

    fn call(&self, op: &str, input: Value) -> Result<Value, Error> {
        match op {
            "check" => Ok(json!({})),
            "poll" => self.poll(&input),
            "act" => self.act(&input),
            "webhook" => self.webhook(&input),
            other => Err(Error::fatal(format!("unknown operation `{other}`"))),
        }
    }
}

declare_connector!(Zendesk);

#[cfg(test)]
mod tests {
    use super::*;

    fn zendesk(extra: Value) -> Result<Zendesk, Error> {
        let mut c = json!({"subdomain": "acme", "email": "a@acme.example", "token": "t0k"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Zendesk::new(Host::offline(), c)
    }

    #[test]
    fn configuration_is_checked_with_messages_naming_the_field() {
        let z = zendesk(json!({})).unwrap();
        assert_eq!(z.base, "https://acme.zendesk.com");
        assert_eq!(
            z.auth,
            format!("Basic {}", sign::base64(b"a@acme.example/token:t0k"))
        );
        let e = zendesk(json!({"subdomian": "x"})).err().unwrap();
        assert!(
            e.message.starts_with("config: unknown field `subdomian`"),
            "{e}"
        );
        let e = Zendesk::new(Host::offline(), json!({"subdomain": "a"}))
            .err()
            .unwrap();
        assert!(e.message.contains("give `email` and `token`"), "{e}");
        assert!(zendesk(json!({"overlap_seconds": 10})).is_err());
    }

    #[test]
    fn a_ticket_is_created_once_and_updated_per_change() {
        let z = zendesk(json!({"account_prefix": "zd-"})).unwrap();
        let t = json!({"id": 35436, "subject": "Printer on fire", "priority": "urgent", "status": "open",
            "organization_id": 509974, "created_at": "2026-03-02T10:00:00Z", "updated_at": "2026-03-02T11:00:00Z"});
        let ev = z.ticket_events(&t).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["id"], "zendesk:ticket:35436:created");
        assert_eq!(ev[0]["account"], "zd-509974");
        assert_eq!(ev[0]["data"]["priority"], "urgent");
        assert_eq!(ev[1]["id"], "zendesk:ticket:35436:2026-03-02T11:00:00Z");
        assert_eq!(ev[1]["type"], "ticket.updated");
        let mut fresh = t.clone();
        fresh["updated_at"] = fresh["created_at"].clone();
        assert_eq!(z.ticket_events(&fresh).unwrap().len(), 1);
        fresh["organization_id"] = Value::Null;
        assert!(z.ticket_events(&fresh).unwrap().is_empty());
    }

    #[test]
    fn an_organization_is_mapped_with_defaults_and_configured_fields() {
        let z = zendesk(json!({"mapping": {"attributes.tier": "organization_fields.tier", "attributes.tags": null}})).unwrap();
        let org = json!({"id": 4112492, "name": "Groablet", "external_id": "ABC198", "tags": ["smiley"],
            "domain_names": ["remain.com"], "organization_fields": {"tier": "gold"}});
        assert_eq!(
            z.account(&org).unwrap(),
            json!({"id": "4112492", "name": "Groablet", "attributes": {
                "zendesk_organization_id": 4112492, "external_id": "ABC198", "domains": ["remain.com"],
                "fields": {"tier": "gold"}, "tier": "gold"}})
        );
    }
}
