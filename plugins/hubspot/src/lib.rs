//! HubSpot CRM v3 as a Touchpilot connector
//! (https://developers.hubspot.com/docs/api/crm/understanding-the-crm).
//!
//! - Source: companies are accounts and deals are `deal.created` /
//!   `deal.updated` events of their company, both read with the CRM search
//!   API by `hs_lastmodifieddate` (ascending, `GTE` the last value seen
//!   minus an overlap window, the lower bound moved forward rather than
//!   paging past the search's 10,000-result cap); companies' contacts come
//!   from the v4 associations, whose labels (`Champion`, `Executive
//!   sponsor`) are the contacts' roles.
//! - Actions: `create_task` (assigned to the account owner, due date),
//!   `create_note`, `update_field`. Tasks and notes carry the action key in
//!   a unique property and are searched for before being created, so a
//!   retried action finds its earlier result.
//! - Tokens: a private-app `token`, or OAuth (`client_id`, `client_secret`,
//!   `refresh_token`) refreshed from `expires_in` and once on a 401.
//! - Webhook: HubSpot's v3 signature (`base64(HMAC-SHA256(method + uri +
//!   body + timestamp))` with the app secret, refused after five minutes).
//!   Company events are events, and the company is read again as an
//!   account (a contact's new label does not move `hs_lastmodifieddate`,
//!   so `company.associationChange` is how a new champion arrives).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use touchpilot_plugin::{
    Connector, Error, Host, HttpRequest, HttpResponse, caps, declare_connector, mapping, sign,
};

/// The account fields a company fills unless configured otherwise.
const DEFAULT_MAPPING: &[(&str, &str)] = &[
    ("name", "properties.name"),
    ("mrr", "properties.mrr"),
    ("renewal_at", "properties.renewal_date"),
    ("timezone", "properties.timezone"),
    ("owner.hubspot_owner_id", "properties.hubspot_owner_id"),
    ("attributes.domain", "properties.domain"),
    ("attributes.industry", "properties.industry"),
    ("attributes.hubspot_company_id", "id"),
];

const ACTIONS: &str = "create_task, create_note, update_field";
/// HubSpot-defined association type ids (HubSpot's SDK `AssociationTypes`).
const TASK_TO_COMPANY: u32 = 192;
const NOTE_TO_COMPANY: u32 = 190;
const PAGE: u32 = 100;
/// The search API answers at most 10,000 results for one query.
const SEARCH_CAP: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// A current access token, used until it is refused or refreshed.
    pub access_token: Option<String>,
}

/// The connector's `config:` in touchpilot.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A private app's access token.
    pub token: Option<String>,
    /// OAuth credentials, instead of `token`.
    pub oauth: Option<OAuth>,
    /// Default `https://api.hubapi.com`.
    pub base_url: Option<String>,
    /// Default `{base_url}/oauth/v1/token`.
    pub token_url: Option<String>,
    /// The app's client secret, to verify webhooks (default: `oauth.client_secret`).
    pub webhook_secret: Option<String>,
    /// Where a Touchpilot account keeps its HubSpot company id
    /// (default `attributes.hubspot_company_id`, then the account id).
    pub company_id_field: Option<String>,
    /// The unique task/note property holding Touchpilot's action key.
    #[serde(default = "default_key_property")]
    pub key_property: String,
    /// Owner email → HubSpot owner id, for accounts from other sources.
    #[serde(default)]
    pub owners: BTreeMap<String, String>,
    /// Days from the action to the task's due date when the template gives no `due`.
    #[serde(default = "default_due_days")]
    pub task_due_days: i64,
    /// Milliseconds to start the first sync from (default: now minus the overlap).
    pub start_ms: Option<i64>,
    /// Seconds of changes read again on each poll (default 300).
    #[serde(default = "default_overlap")]
    pub overlap_seconds: i64,
    /// Association label → contact role (default: the label in lower case,
    /// `executive sponsor` → `sponsor`).
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Account field ← company field; see `touchpilot_plugin::mapping`.
    #[serde(default)]
    pub mapping: BTreeMap<String, Option<String>>,
}

fn default_key_property() -> String {
    "touchpilot_key".into()
}
fn default_due_days() -> i64 {
    3
}
fn default_overlap() -> i64 {
    300
}

struct Token {
    access: String,
    /// Unix seconds after which it is refreshed before use.
    refresh_after: i64,
}

pub struct HubSpot {
    host: Host,
    c: Config,
    base: String,
    mapping: Vec<(String, String)>,
    token: Mutex<Option<Token>>,
}

fn config_error(e: impl std::fmt::Display) -> Error {
    Error::fatal(format!("config: {e}"))
}

fn time(ts: &str) -> Result<jiff::Timestamp, Error> {
    ts.parse::<jiff::Timestamp>()
        .map_err(|e| Error::fatal(format!("bad time `{ts}`: {e}")))
}

impl HubSpot {
    pub fn new(host: Host, config: Value) -> Result<HubSpot, Error> {
        let c: Config = serde_json::from_value(config).map_err(config_error)?;
        if c.token.is_some() == c.oauth.is_some() {
            return Err(config_error("give either `token` (private app) or `oauth`"));
        }
        let base = c
            .base_url
            .clone()
            .unwrap_or_else(|| "https://api.hubapi.com".into())
            .trim_end_matches('/')
            .to_string();
        let mapping = mapping::merged(DEFAULT_MAPPING, &c.mapping);
        let token = c
            .token
            .as_ref()
            .or(c.oauth.as_ref().and_then(|o| o.access_token.as_ref()))
            .map(|t| Token {
                access: t.clone(),
                refresh_after: i64::MAX,
            });
        Ok(HubSpot {
            host,
            c,
            base,
            mapping,
            token: Mutex::new(token),
        })
    }

    /// A fresh access token (refreshed when `now` is past its lifetime).
    fn access(&self, now: i64, force: bool) -> Result<String, Error> {
        let mut token = self
            .token
            .lock()
            .map_err(|_| Error::fatal("token lock poisoned"))?;
        if let Some(t) = token.as_ref()
            && !force
            && now < t.refresh_after
        {
            return Ok(t.access.clone());
        }
        let Some(o) = &self.c.oauth else {
            return Err(Error::fatal(
                "the private-app token was refused (HTTP 401): replace `token`",
            ));
        };
        let url = self
            .c
            .token_url
            .clone()
            .unwrap_or_else(|| format!("{}/oauth/v1/token", self.base));
        let form = format!(
            "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
            form_encode(&o.client_id),
            form_encode(&o.client_secret),
            form_encode(&o.refresh_token)
        );
        let mut req = HttpRequest::new("POST", url)
            .header("Content-Type", "application/x-www-form-urlencoded");
        req.body = form;
        let resp = self.host.http(&req)?;
        if resp.status == 400 || resp.status == 401 {
            return Err(Error::fatal(format!(
                "token refresh refused (HTTP {}): {}; check `oauth`",
                resp.status,
                touchpilot_plugin::wire::excerpt(&resp.body)
            )));
        }
        let v = resp.check("hubspot token refresh")?.json()?;
        let access = v["access_token"]
            .as_str()
            .ok_or_else(|| Error::fatal("token refresh: no `access_token` in the answer"))?
            .to_string();
        // Refresh a minute early: a token must not expire mid-call.
        let lifetime = v["expires_in"].as_i64().unwrap_or(1800);
        *token = Some(Token {
            access: access.clone(),
            refresh_after: now + lifetime - 60,
        });
        Ok(access)
    }

    /// A request with the bearer token; one refresh and retry on 401 when
    /// the token can be refreshed.
    fn send(&self, req: HttpRequest, now: i64, what: &str) -> Result<HttpResponse, Error> {
        let mut resp = self.host.http(&req.clone().header(
            "Authorization",
            format!("Bearer {}", self.access(now, false)?),
        ))?;
        if resp.status == 401 {
            let fresh = self.access(now, true)?;
            resp = self
                .host
                .http(&req.header("Authorization", format!("Bearer {fresh}")))?;
            if resp.status == 401 {
                return Err(Error::fatal(format!(
                    "hubspot {what}: HTTP 401 with a fresh token: {}",
                    touchpilot_plugin::wire::excerpt(&resp.body)
                )));
            }
        }
        resp.check(&format!("hubspot {what}"))?;
        Ok(resp)
    }

    fn post(&self, path: &str, body: &Value, now: i64, what: &str) -> Result<Value, Error> {
        self.send(
            HttpRequest::new("POST", format!("{}{path}", self.base)).json(body),
            now,
            what,
        )?
        .json()
    }

    /// The role of a contact from its association labels.
    fn role(&self, labels: &[&str]) -> Option<String> {
        // A contact with several labels takes the first: HubSpot lists
        // them in the order they were given.
        labels.first().map(|l| {
            if let Some(r) = self.c.roles.get(*l) {
                return r.clone();
            }
            let lower = l.to_lowercase();
            match lower.as_str() {
                "executive sponsor" | "executive_sponsor" => "sponsor".to_string(),
                _ => lower.replace(' ', "_"),
            }
        })
    }

    /// A company's contacts, with roles from association labels.
    fn contacts(&self, company: &str, now: i64) -> Result<Vec<Value>, Error> {
        let mut labels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!(
                "{}/crm/v4/objects/companies/{company}/associations/contacts?limit=500",
                self.base
            );
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let page = self
                .send(HttpRequest::new("GET", path), now, "company contacts")?
                .json()?;
            for r in page["results"].as_array().into_iter().flatten() {
                let id = match &r["toObjectId"] {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => continue,
                };
                let entry = labels.entry(id).or_default();
                for t in r["associationTypes"].as_array().into_iter().flatten() {
                    if let Some(l) = t["label"].as_str() {
                        entry.push(l.to_string());
                    }
                }
            }
            after = page
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(str::to_string);
            if after.is_none() {
                break;
            }
        }
        if labels.is_empty() {
            return Ok(vec![]);
        }
        let inputs: Vec<Value> = labels.keys().map(|id| json!({"id": id})).collect();
        let read = self.post(
            "/crm/v3/objects/contacts/batch/read",
            &json!({"properties": ["email", "firstname", "lastname", "hs_timezone"], "inputs": inputs}),
            now,
            "read contacts",
        )?;
        let mut out = Vec::new();
        for c in read["results"].as_array().into_iter().flatten() {
            let p = &c["properties"];
            let Some(email) = p["email"].as_str() else {
                continue;
            };
            let name = [p["firstname"].as_str(), p["lastname"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let mut contact = json!({"email": email, "name": name, "hubspot_contact_id": c["id"]});
            let ls: Vec<&str> = c["id"]
                .as_str()
                .and_then(|id| labels.get(id))
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            if let Some(role) = self.role(&ls) {
                contact["role"] = json!(role);
            }
            if let Some(tz) = p["hs_timezone"].as_str() {
                contact["timezone"] = json!(tz);
            }
            out.push(contact);
        }
        Ok(out)
    }

    /// One page of `object` modified since the cursor part's lower bound,
    /// and that part's next value. Past the search cap, the bound moves
    /// to the last modification seen instead of paging further.
    fn search_page(
        &self,
        object: &str,
        properties: &[&str],
        part: &Value,
        first_ms: i64,
        now: i64,
    ) -> Result<(Vec<Value>, Value, bool), Error> {
        let overlap_ms = self.c.overlap_seconds * 1000;
        let since = part["since_ms"].as_i64().unwrap_or(first_ms);
        let mut max_seen = part["max_seen_ms"].as_i64().unwrap_or(since);
        let mut body = json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": since.to_string()}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": PAGE,
        });
        if let Some(a) = part["after"].as_str() {
            body["after"] = json!(a);
        }
        let what = format!("{object} search");
        let page = self.post(
            &format!("/crm/v3/objects/{object}/search"),
            &body,
            now,
            &what,
        )?;
        let results = page["results"].as_array().cloned().unwrap_or_default();
        for r in &results {
            if let Some(m) = r
                .pointer("/properties/hs_lastmodifieddate")
                .and_then(Value::as_str)
            {
                max_seen = max_seen.max(modified_ms(m)?);
            }
        }
        let next = page.pointer("/paging/next/after").and_then(Value::as_str);
        let near_cap = next
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n + u64::from(PAGE) >= SEARCH_CAP);
        let part = match next {
            Some(n) if !near_cap => {
                json!({"since_ms": since, "after": n, "max_seen_ms": max_seen, "caught_up": false})
            }
            Some(_) => {
                json!({"since_ms": max_seen, "after": null, "max_seen_ms": max_seen, "caught_up": false})
            }
            None => json!({"since_ms": (max_seen - overlap_ms).max(since), "after": null,
                           "max_seen_ms": max_seen, "caught_up": true}),
        };
        Ok((results, part, next.is_some()))
    }

    /// A deal's events: `deal.created` once, `deal.updated` per
    /// modification, for the company it is associated with.
    fn deal_events(&self, deal: &Value, now: i64) -> Result<Vec<Value>, Error> {
        let Some(id) = deal["id"].as_str() else {
            return Ok(vec![]);
        };
        let path = format!(
            "{}/crm/v4/objects/deals/{id}/associations/companies?limit=1",
            self.base
        );
        let assoc = self
            .send(HttpRequest::new("GET", path), now, "deal company")?
            .json()?;
        let Some(company) = assoc
            .pointer("/results/0/toObjectId")
            .map(|v| v.to_string().trim_matches('"').to_string())
        else {
            // A deal of no company belongs to no account.
            return Ok(vec![]);
        };
        let p = &deal["properties"];
        let created = time(p["createdate"].as_str().unwrap_or("1970-01-01T00:00:00Z"))?;
        let modified = p["hs_lastmodifieddate"]
            .as_str()
            .map(modified_ms)
            .transpose()?;
        let data = json!({
            "deal_id": id,
            "name": p["dealname"],
            "amount": p["amount"].as_str().and_then(|a| a.parse::<f64>().ok()),
            "stage": p["dealstage"],
            "pipeline": p["pipeline"],
            "close_date": p["closedate"],
        });
        let mut out = vec![
            json!({"id": format!("hubspot:deal:{id}:created"), "account": company,
            "type": "deal.created", "at": created.to_string(), "data": data}),
        ];
        if let Some(ms) = modified.filter(|ms| *ms > created.as_millisecond()) {
            let at =
                jiff::Timestamp::from_millisecond(ms).map_err(|e| Error::fatal(e.to_string()))?;
            out.push(
                json!({"id": format!("hubspot:deal:{id}:{ms}"), "account": company,
                "type": "deal.updated", "at": at.to_string(), "data": data}),
            );
        }
        Ok(out)
    }

    /// One page of companies (accounts) and one of deals (events).
    fn poll(&self, input: &Value) -> Result<Value, Error> {
        let now_ts = time(input["now"].as_str().unwrap_or("1970-01-01T00:00:00Z"))?;
        let now = now_ts.as_second();
        let first_ms = self
            .c
            .start_ms
            .unwrap_or(now_ts.as_millisecond() - self.c.overlap_seconds * 1000);
        let cursor = &input["cursor"];
        let properties: Vec<&str> = self
            .mapping
            .iter()
            .filter_map(|(_, from)| from.strip_prefix("properties."))
            .map(|p| p.split('.').next().unwrap_or(p))
            .chain(["hs_lastmodifieddate"])
            .collect();
        // Within a round (until `more` is false), a part that is caught up
        // waits for the other instead of re-reading its overlap window.
        let new_round = ["companies", "deals"]
            .iter()
            .all(|p| cursor[p]["caught_up"] != false);
        let waits = |part: &str| !new_round && cursor[part]["caught_up"] == true;
        let (companies, companies_next, more_companies) = if waits("companies") {
            (vec![], cursor["companies"].clone(), false)
        } else {
            self.search_page(
                "companies",
                &properties,
                &cursor["companies"],
                first_ms,
                now,
            )?
        };
        let mut accounts = Vec::new();
        for company in &companies {
            let Some(id) = company["id"].as_str() else {
                continue;
            };
            let mut account = Map::new();
            account.insert("id".into(), json!(id));
            mapping::apply(&self.mapping, company, &mut account);
            account.insert("contacts".into(), Value::Array(self.contacts(id, now)?));
            accounts.push(Value::Object(numbers(account)));
        }
        let deal_properties = [
            "dealname",
            "amount",
            "dealstage",
            "pipeline",
            "closedate",
            "createdate",
            "hs_lastmodifieddate",
        ];
        let (deals, deals_next, more_deals) = if waits("deals") {
            (vec![], cursor["deals"].clone(), false)
        } else {
            self.search_page("deals", &deal_properties, &cursor["deals"], first_ms, now)?
        };
        let mut events = Vec::new();
        for deal in &deals {
            events.extend(self.deal_events(deal, now)?);
        }
        Ok(json!({
            "accounts": accounts,
            "events": events,
            "cursor": {"companies": companies_next, "deals": deals_next},
            "more": more_companies || more_deals,
        }))
    }

    /// The HubSpot company of a Touchpilot account.
    fn company_id(&self, account: &Value) -> Option<String> {
        let field = self
            .c
            .company_id_field
            .as_deref()
            .unwrap_or("attributes.hubspot_company_id");
        mapping::get(account, field)
            .or_else(|| account.get("id"))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    }

    fn owner_id(&self, account: &Value) -> Option<String> {
        let owner = &account["owner"];
        owner["hubspot_owner_id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| owner["hubspot_owner_id"].as_u64().map(|n| n.to_string()))
            .or_else(|| {
                let email = owner["email"].as_str()?.to_lowercase();
                self.c
                    .owners
                    .iter()
                    .find(|(e, _)| e.to_lowercase() == email)
                    .map(|(_, id)| id.clone())
            })
    }

    /// An earlier task or note written with this key, if any.
    fn find(&self, object: &str, key: &str, now: i64) -> Result<Option<Value>, Error> {
        let found = self.post(
            &format!("/crm/v3/objects/{object}/search"),
            &json!({"filterGroups": [{"filters": [{"propertyName": self.c.key_property, "operator": "EQ", "value": key}]}],
                    "properties": [self.c.key_property], "limit": 1}),
            now,
            &format!("{object} search"),
        )?;
        Ok(found["results"]
            .as_array()
            .and_then(|r| r.first())
            .map(|r| r["id"].clone()))
    }

    fn act(&self, input: &Value) -> Result<Value, Error> {
        let action = input["action"].as_str().unwrap_or("");
        let key = input["key"]
            .as_str()
            .ok_or_else(|| Error::fatal("act without a `key`"))?;
        let now_ts = time(input["now"].as_str().unwrap_or("1970-01-01T00:00:00Z"))?;
        let now = now_ts.as_second();
        let content = &input["content"];
        let account = &input["account"];
        let company = self
            .company_id(account)
            .ok_or_else(|| Error::fatal("the account has no HubSpot company id"))?;
        let at = input["at"]
            .as_str()
            .map(time)
            .transpose()?
            .unwrap_or(now_ts);
        let (object, type_id, mut properties) = match action {
            "create_task" => {
                let subject = content["subject"].as_str().ok_or_else(|| {
                    Error::fatal("create_task: the template must render a `subject`")
                })?;
                let due = match content["due"].as_str() {
                    Some(d) => time(d)?,
                    None => at
                        .checked_add(jiff::SignedDuration::from_hours(24 * self.c.task_due_days))
                        .map_err(|e| Error::fatal(e.to_string()))?,
                };
                let mut p = json!({
                    "hs_timestamp": due.to_string(),
                    "hs_task_subject": subject,
                    "hs_task_body": content["body"].as_str().unwrap_or(""),
                    "hs_task_status": "NOT_STARTED",
                    "hs_task_priority": content["priority"].as_str().unwrap_or("MEDIUM").to_uppercase(),
                    "hs_task_type": content["type"].as_str().unwrap_or("TODO").to_uppercase(),
                });
                if let Some(owner) = self.owner_id(account) {
                    p["hubspot_owner_id"] = json!(owner);
                }
                ("tasks", TASK_TO_COMPANY, p)
            }
            "create_note" => {
                let body = content["body"].as_str().ok_or_else(|| {
                    Error::fatal("create_note: the template must render a `body`")
                })?;
                (
                    "notes",
                    NOTE_TO_COMPANY,
                    json!({"hs_timestamp": at.to_string(), "hs_note_body": body}),
                )
            }
            "update_field" => {
                let field = content["field"].as_str().ok_or_else(|| {
                    Error::fatal("update_field: the template must render `field` and `value`")
                })?;
                // Setting one property: repeating it changes nothing.
                self.send(
                    HttpRequest::new(
                        "PATCH",
                        format!("{}/crm/v3/objects/companies/{company}", self.base),
                    )
                    .json(&json!({"properties": {field: content["value"]}})),
                    now,
                    "update_field",
                )?;
                return Ok(json!({"id": company, "created": false}));
            }
            other => {
                return Err(Error::fatal(format!(
                    "hubspot has no action `{other}`; it offers {ACTIONS}"
                )));
            }
        };
        if let Some(id) = self.find(object, key, now)? {
            return Ok(json!({"id": id, "created": false}));
        }
        properties[&self.c.key_property] = json!(key);
        let created = self.post(
            &format!("/crm/v3/objects/{object}"),
            &json!({"properties": properties, "associations": [{"to": {"id": company},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]}),
            now,
            action,
        )?;
        Ok(json!({"id": created["id"], "created": true}))
    }

    fn webhook(&self, input: &Value) -> Result<Value, Error> {
        let secret = self.c.webhook_secret.as_ref().or(self
            .c
            .oauth
            .as_ref()
            .map(|o| &o.client_secret));
        let Some(secret) = secret else {
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
            header("x-hubspot-signature-v3"),
            header("x-hubspot-request-timestamp"),
        ) else {
            return Ok(
                json!({"rejected": "the request is not signed (X-HubSpot-Signature-v3 missing)"}),
            );
        };
        let now_ms =
            time(input["now"].as_str().unwrap_or("1970-01-01T00:00:00Z"))?.as_millisecond();
        let Ok(sent_ms) = ts.parse::<i64>() else {
            return Ok(json!({"rejected": "bad X-HubSpot-Request-Timestamp"}));
        };
        if (now_ms - sent_ms).abs() > 5 * 60 * 1000 {
            return Ok(json!({"rejected": "timestamp older than five minutes (replayed?)"}));
        }
        let (method, uri, body) = (
            input["method"].as_str().unwrap_or("POST"),
            input["uri"].as_str().unwrap_or(""),
            input["body"].as_str().unwrap_or(""),
        );
        let expected = sign::base64(&sign::hmac_sha256(
            secret.as_bytes(),
            &[
                method.as_bytes(),
                uri.as_bytes(),
                body.as_bytes(),
                ts.as_bytes(),
            ],
        ));
        if !sign::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Ok(json!({"rejected": "signature mismatch"}));
        }
        let items: Vec<Value> = serde_json::from_str(body).map_err(|e| {
            Error::fatal(format!("webhook body is not a JSON array of events: {e}"))
        })?;
        let mut events = Vec::new();
        let mut reread: Vec<String> = Vec::new();
        for item in items {
            let kind = item["subscriptionType"].as_str().unwrap_or("");
            // Only company events name an account without another lookup.
            let Some(rest) = kind.strip_prefix("company.") else {
                continue;
            };
            // A company that changed (a property, or a contact's label:
            // which leaves `hs_lastmodifieddate` alone) is read again, so
            // its account and contact roles are current.
            let company = match rest {
                "associationChange" => &item["fromObjectId"],
                "deletion" => &Value::Null,
                _ => &item["objectId"],
            };
            if let Some(id) = id_text(company)
                && !reread.contains(&id)
            {
                reread.push(id);
            }
            let occurred = item["occurredAt"].as_i64().unwrap_or(now_ms);
            let at = jiff::Timestamp::from_millisecond(occurred)
                .map_err(|e| Error::fatal(e.to_string()))?;
            events.push(json!({
                "id": format!("hubspot:webhook:{}", item["eventId"]),
                "account": item["objectId"].to_string().trim_matches('"'),
                "type": format!("company.{}", snake(rest)),
                "at": at.to_string(),
                "data": {"property": item["propertyName"], "value": item["propertyValue"], "source": item["changeSource"]},
            }));
        }
        let now = now_ms / 1000;
        let mut accounts = Vec::new();
        for id in reread {
            accounts.push(self.company_account(&id, now)?);
        }
        Ok(json!({"events": events, "accounts": accounts}))
    }

    /// A company read now, as an account with its contacts.
    fn company_account(&self, id: &str, now: i64) -> Result<Value, Error> {
        let properties: Vec<&str> = self
            .mapping
            .iter()
            .filter_map(|(_, from)| from.strip_prefix("properties."))
            .map(|p| p.split('.').next().unwrap_or(p))
            .collect();
        let url = format!(
            "{}/crm/v3/objects/companies/{id}?properties={}",
            self.base,
            properties.join(",")
        );
        let company = self
            .send(HttpRequest::new("GET", url), now, "read company")?
            .json()?;
        let mut account = Map::new();
        account.insert("id".into(), json!(id));
        mapping::apply(&self.mapping, &company, &mut account);
        account.insert("contacts".into(), Value::Array(self.contacts(id, now)?));
        Ok(Value::Object(numbers(account)))
    }
}

/// An object id as text (HubSpot sends numbers in webhooks).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// `propertyChange` → `property_changed`, `creation` → `created`.
fn snake(s: &str) -> String {
    match s {
        "creation" => "created".into(),
        "deletion" => "deleted".into(),
        "propertyChange" => "property_changed".into(),
        "associationChange" => "association_changed".into(),
        "merge" => "merged".into(),
        "restore" => "restored".into(),
        other => other.to_lowercase(),
    }
}

/// HubSpot sends every property as a string; numbers of the account
/// model (`mrr`, `arr`) are turned back into numbers.
fn numbers(mut account: Map<String, Value>) -> Map<String, Value> {
    for f in ["mrr", "arr"] {
        if let Some(n) = account
            .get(f)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
        {
            account.insert(f.into(), json!(n));
        }
    }
    account
}

/// `hs_lastmodifieddate`: ISO 8601, or milliseconds in some responses.
fn modified_ms(s: &str) -> Result<i64, Error> {
    match s.parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => Ok(time(s)?.as_millisecond()),
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Connector for HubSpot {
    const NAME: &'static str = "hubspot";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CAPABILITIES: u64 = caps::SOURCE | caps::ACTIONS | caps::WEBHOOK;

    fn open(host: Host, config: Value) -> Result<Self, Error> {
        HubSpot::new(host, config)
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

declare_connector!(HubSpot);

#[cfg(test)]
mod tests {
    use super::*;

    fn hubspot(config: Value) -> Result<HubSpot, Error> {
        HubSpot::new(Host::offline(), config)
    }

    #[test]
    fn configuration_needs_exactly_one_kind_of_credentials() {
        assert!(hubspot(json!({"token": "pat"})).is_ok());
        let e = hubspot(json!({})).err().unwrap();
        assert_eq!(
            e.message,
            "config: give either `token` (private app) or `oauth`"
        );
        let e = hubspot(json!({"token": "x", "oauth": {"client_id": "a", "client_secret": "b", "refresh_token": "c"}})).err().unwrap();
        assert!(e.message.contains("either"));
        let e = hubspot(json!({"token": "x", "tokn": 1})).err().unwrap();
        assert!(e.message.starts_with("config: unknown field `tokn`"), "{e}");
    }

    #[test]
    fn roles_come_from_association_labels() {
        let h = hubspot(json!({"token": "x", "roles": {"Decision maker": "sponsor"}})).unwrap();
        assert_eq!(h.role(&["Champion"]).as_deref(), Some("champion"));
        assert_eq!(h.role(&["Executive sponsor"]).as_deref(), Some("sponsor"));
        assert_eq!(h.role(&["Decision maker"]).as_deref(), Some("sponsor"));
        assert_eq!(
            h.role(&["Billing Contact"]).as_deref(),
            Some("billing_contact")
        );
        assert_eq!(h.role(&[]), None);
    }

    #[test]
    fn the_company_and_owner_of_an_account_are_found() {
        let h =
            hubspot(json!({"token": "x", "owners": {"dana@vendor.example": "64492917"}})).unwrap();
        let a = json!({"id": "509974", "attributes": {"hubspot_company_id": "500123"}, "owner": {"email": "Dana@vendor.example"}});
        assert_eq!(h.company_id(&a).as_deref(), Some("500123"));
        assert_eq!(h.owner_id(&a).as_deref(), Some("64492917"));
        assert_eq!(h.company_id(&json!({"id": "77"})).as_deref(), Some("77"));
        assert_eq!(form_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(modified_ms("2026-01-01T00:00:00Z").unwrap(), 1767225600000);
    }
}
