//! Local stand-ins for the vendors' APIs, answering as their references
//! document (docs/research/connectors.md cites each shape): pagination,
//! 429 with `Retry-After`, expired tokens, validation errors. Every request
//! is recorded so tests can check what a connector asked for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A request as the vendor saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Req {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.uri.split_once('?')?.1;
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// An answer. `hang`: never answer (after the handler's effects).
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    pub hang: bool,
}

pub fn ok(status: u16, body: Value) -> Resp {
    Resp {
        status,
        body,
        ..Resp::default()
    }
}

/// A scripted answer for the next request whose path starts with `path`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub path: &'static str,
    pub resp: Resp,
}

type Handler = Arc<dyn Fn(&mut Value, &Req) -> Resp + Send + Sync>;

#[derive(Clone)]
pub struct Mock {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
    pub faults: Arc<Mutex<VecDeque<Fault>>>,
    /// The vendor's data (organizations, tickets, companies, tasks...).
    pub data: Arc<Mutex<Value>>,
    /// Paths whose next request takes effect but is never answered (a
    /// write that succeeded while the caller timed out).
    pub hang_after: Arc<Mutex<Vec<&'static str>>>,
    handler: Handler,
}

impl Mock {
    pub async fn start(data: Value, handler: Handler) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = Mock {
            base: format!("http://{}", listener.local_addr().unwrap()),
            requests: Default::default(),
            faults: Default::default(),
            data: Arc::new(Mutex::new(data)),
            hang_after: Default::default(),
            handler,
        };
        let app = axum::Router::new().fallback(serve).with_state(mock.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        mock
    }

    pub fn fault(&self, path: &'static str, resp: Resp) {
        self.faults.lock().unwrap().push_back(Fault { path, resp });
    }

    /// Requests whose path starts with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<Req> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path().starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn serve(
    State(m): State<Mock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        method: method.to_string(),
        uri: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    m.requests.lock().unwrap().push(req.clone());
    let fault = {
        let mut faults = m.faults.lock().unwrap();
        let i = faults.iter().position(|f| req.path().starts_with(f.path));
        i.and_then(|i| faults.remove(i))
    };
    let mut resp = match fault {
        Some(f) => f.resp,
        None => (m.handler)(&mut m.data.lock().unwrap(), &req),
    };
    {
        let mut hang = m.hang_after.lock().unwrap();
        if let Some(i) = hang.iter().position(|p| *p == req.path()) {
            hang.remove(i);
            resp.hang = true;
        }
    }
    if resp.hang {
        std::future::pending::<()>().await;
    }
    let mut builder = axum::http::Response::builder()
        .status(StatusCode::from_u16(resp.status).unwrap())
        .header("content-type", "application/json");
    for (k, v) in &resp.headers {
        builder = builder.header(*k, v);
    }
    let body = if resp.body.is_null() {
        String::new()
    } else {
        resp.body.to_string()
    };
    builder
        .body(axum::body::Body::from(body))
        .unwrap()
        .into_response()
}

pub mod zendesk {
    //! Zendesk Support: incremental exports (time-based for organizations,
    //! cursor-based for tickets), show ticket, create ticket with
    //! `Idempotency-Key`. Two items per page, so every sync pages.

    use super::*;

    pub const AUTH_EMAIL: &str = "agent@acme.example";
    pub const AUTH_TOKEN: &str = "zd-api-token";
    const PAGE: usize = 2;

    fn unix(ts: &str) -> i64 {
        ts.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    pub async fn start(orgs: Value, tickets: Value) -> Mock {
        let data = json!({"organizations": orgs, "tickets": tickets, "created": [], "keys": {}});
        Mock::start(data, Arc::new(handle)).await
    }

    fn handle(d: &mut Value, r: &Req) -> Resp {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{AUTH_EMAIL}/token:{AUTH_TOKEN}"))
        );
        if r.header("authorization") != Some(expected.as_str()) {
            return ok(401, json!({"error": "Couldn't authenticate you"}));
        }
        let path = r.path().to_string();
        match (r.method.as_str(), path.as_str()) {
            ("GET", "/api/v2/incremental/organizations.json") => {
                let start: i64 = r.query("start_time").unwrap().parse().unwrap();
                let mut orgs: Vec<Value> = d["organizations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|o| unix(o["updated_at"].as_str().unwrap()) >= start)
                    .cloned()
                    .collect();
                orgs.sort_by_key(|o| unix(o["updated_at"].as_str().unwrap()));
                let end = orgs.len() <= PAGE;
                orgs.truncate(PAGE);
                let end_time = orgs
                    .last()
                    .map(|o| unix(o["updated_at"].as_str().unwrap()))
                    .unwrap_or(start);
                ok(
                    200,
                    json!({
                    "count": orgs.len(), "end_of_stream": end, "end_time": end_time,
                    "next_page": format!("https://acme.zendesk.com/api/v2/incremental/organizations?start_time={end_time}"),
                    "organizations": orgs}),
                )
            }
            ("GET", "/api/v2/incremental/tickets/cursor.json") => {
                let mut tickets: Vec<Value> = d["tickets"].as_array().unwrap().clone();
                tickets
                    .sort_by_key(|t| (unix(t["updated_at"].as_str().unwrap()), t["id"].as_u64()));
                // The cursor is the position after the last ticket sent.
                let from = match (r.query("cursor"), r.query("start_time")) {
                    (Some(c), _) => c.trim_start_matches("pos").parse::<usize>().unwrap(),
                    (None, Some(s)) => {
                        let s: i64 = s.parse().unwrap();
                        tickets
                            .iter()
                            .position(|t| unix(t["updated_at"].as_str().unwrap()) >= s)
                            .unwrap_or(tickets.len())
                    }
                    (None, None) => return ok(400, json!({"error": "InvalidPaginationParameter"})),
                };
                let page: Vec<Value> = tickets.iter().skip(from).take(PAGE).cloned().collect();
                let after = from + page.len();
                ok(
                    200,
                    json!({
                    "after_cursor": format!("pos{after}"),
                    "after_url": format!("https://acme.zendesk.com/api/v2/incremental/tickets/cursor.json?cursor=pos{after}"),
                    "before_cursor": null, "before_url": null,
                    "end_of_stream": after >= tickets.len(),
                    "tickets": page}),
                )
            }
            ("POST", "/api/v2/tickets.json") => {
                let key = r.header("idempotency-key").unwrap_or("").to_string();
                if let Some(earlier) = d["keys"].get(&key) {
                    let mut resp = ok(201, json!({"ticket": earlier}));
                    resp.headers.push(("x-idempotency-lookup", "hit".into()));
                    return resp;
                }
                let mut t = r.json()["ticket"].clone();
                if t["subject"].as_str().unwrap_or("").is_empty() {
                    return ok(
                        422,
                        json!({"error": "RecordInvalid", "description": "Record validation errors",
                        "details": {"subject": [{"type": "blank", "description": "Subject: cannot be blank"}]}}),
                    );
                }
                let id = 1000 + d["created"].as_array().unwrap().len() as u64;
                t["id"] = json!(id);
                t["url"] = json!(format!("https://acme.zendesk.com/api/v2/tickets/{id}.json"));
                d["created"].as_array_mut().unwrap().push(t.clone());
                if !key.is_empty() {
                    d["keys"][&key] = t.clone();
                }
                let mut resp = ok(201, json!({"ticket": t}));
                resp.headers.push(("x-idempotency-lookup", "miss".into()));
                resp
            }
            ("GET", p) if p.starts_with("/api/v2/tickets/") => {
                let id: u64 = p
                    .trim_start_matches("/api/v2/tickets/")
                    .trim_end_matches(".json")
                    .parse()
                    .unwrap();
                match d["tickets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["id"] == json!(id))
                {
                    Some(t) => ok(200, json!({"ticket": t})),
                    None => ok(
                        404,
                        json!({"error": "RecordNotFound", "description": "Not found"}),
                    ),
                }
            }
            _ => ok(404, json!({"error": "InvalidEndpoint"})),
        }
    }
}

pub mod hubspot {
    //! HubSpot CRM v3: company search by `hs_lastmodifieddate` (two per
    //! page), v4 associations with labels, contact batch read, task and
    //! note search and create, company update, OAuth token refresh (the
    //! first token is expired).

    use super::*;

    pub const CLIENT_SECRET: &str = "hs-client-secret";
    const PAGE: usize = 2;

    pub async fn start(companies: Value, contacts: Value, associations: Value) -> Mock {
        let deals = json!([
            {"id": "7001", "properties": {"dealname": "Acme renewal", "amount": "62400", "dealstage": "contractsent",
                "pipeline": "default", "closedate": "2026-03-31T00:00:00Z", "createdate": "2026-01-05T00:00:00Z",
                "hs_lastmodifieddate": "2026-01-06T00:00:00.000Z"}, "archived": false}]);
        let data = json!({"companies": companies, "contacts": contacts, "associations": associations,
            "deals": deals, "deal_companies": {"7001": 500123},
            "owners": ["64492917"], "tasks": [], "notes": [], "patches": [], "tokens": ["tok-1"], "issued": 1});
        Mock::start(data, Arc::new(handle)).await
    }

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn search(list: &[Value], body: &Value) -> Value {
        let filters = body["filterGroups"][0]["filters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut hits: Vec<Value> = list
            .iter()
            .filter(|o| {
                filters.iter().all(|f| {
                    let prop = f["propertyName"].as_str().unwrap();
                    let have = o["properties"][prop].as_str().unwrap_or("");
                    let want = f["value"].as_str().unwrap();
                    match f["operator"].as_str().unwrap() {
                        "EQ" => have == want,
                        "GTE" => ms(have) >= want.parse::<i64>().unwrap(),
                        other => panic!("operator {other} not served"),
                    }
                })
            })
            .cloned()
            .collect();
        hits.sort_by_key(|o| o["properties"]["hs_lastmodifieddate"].as_str().map(ms));
        let from: usize = body["after"]
            .as_str()
            .map(|a| a.parse().unwrap())
            .unwrap_or(0);
        let limit = body["limit"].as_u64().unwrap_or(10) as usize;
        let total = hits.len();
        let page: Vec<Value> = hits.into_iter().skip(from).take(limit.min(PAGE)).collect();
        let next = from + page.len();
        let mut out = json!({"total": total, "results": page});
        if next < total {
            out["paging"] = json!({"next": {"after": next.to_string(), "link": "<string>"}});
        }
        out
    }

    fn handle(d: &mut Value, r: &Req) -> Resp {
        let path = r.path().to_string();
        if path == "/oauth/v1/token" {
            if !r.body.contains("grant_type=refresh_token")
                || !r.body.contains("refresh_token=hs-refresh")
            {
                return ok(
                    400,
                    json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}),
                );
            }
            let n = d["issued"].as_u64().unwrap() + 1;
            d["issued"] = json!(n);
            let token = format!("tok-{n}");
            d["tokens"].as_array_mut().unwrap().push(json!(token));
            return ok(
                200,
                json!({"token_type": "bearer", "refresh_token": "hs-refresh", "access_token": token, "expires_in": 1800}),
            );
        }
        let auth = r
            .header("authorization")
            .unwrap_or("")
            .trim_start_matches("Bearer ")
            .to_string();
        // The first token has expired; only those refreshed since work.
        if auth == "tok-1" {
            return ok(
                401,
                json!({"status": "error", "message": "The OAuth token used to make this call expired 0 second(s) ago.",
                "correlationId": "019cd9fe-d093-7d4f-99bc-45975fdcf7c6", "category": "EXPIRED_AUTHENTICATION"}),
            );
        }
        if !d["tokens"].as_array().unwrap().contains(&json!(auth)) {
            return ok(
                401,
                json!({"status": "error", "message": "Authentication credentials not found.", "category": "INVALID_AUTHENTICATION"}),
            );
        }
        let body = r.json();
        match (r.method.as_str(), path.as_str()) {
            ("POST", "/crm/v3/objects/companies/search") => {
                ok(200, search(d["companies"].as_array().unwrap(), &body))
            }
            ("POST", "/crm/v3/objects/tasks/search") => {
                ok(200, search(d["tasks"].as_array().unwrap(), &body))
            }
            ("POST", "/crm/v3/objects/notes/search") => {
                ok(200, search(d["notes"].as_array().unwrap(), &body))
            }
            ("POST", "/crm/v3/objects/deals/search") => {
                ok(200, search(d["deals"].as_array().unwrap(), &body))
            }
            ("GET", p) if p.starts_with("/crm/v4/objects/deals/") => {
                let deal = p.split('/').nth(5).unwrap();
                let results: Vec<Value> = d["deal_companies"]
                    .get(deal)
                    .into_iter()
                    .map(|c| json!({"toObjectId": c, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": null}]}))
                    .collect();
                ok(200, json!({"results": results}))
            }
            ("GET", p) if p.starts_with("/crm/v3/objects/companies/") => {
                let id = p.rsplit('/').next().unwrap();
                match d["companies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["id"] == id)
                {
                    Some(c) => ok(200, c.clone()),
                    None => ok(
                        404,
                        json!({"status": "error", "message": "Object not found", "category": "OBJECT_NOT_FOUND"}),
                    ),
                }
            }
            ("POST", "/crm/v3/objects/contacts/batch/read") => {
                let results: Vec<Value> = body["inputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|i| {
                        let id = i["id"].as_str().unwrap();
                        let props = d["contacts"].get(id)?;
                        Some(json!({"id": id, "properties": props, "archived": false}))
                    })
                    .collect();
                ok(200, json!({"status": "COMPLETE", "results": results}))
            }
            ("GET", p) if p.starts_with("/crm/v4/objects/companies/") => {
                let company = p.split('/').nth(5).unwrap();
                let results: Vec<Value> = d["associations"][company]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        json!({"toObjectId": a[0], "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": 280, "label": null},
                        {"category": "USER_DEFINED", "typeId": 7, "label": a[1]}]})
                    })
                    .collect();
                ok(200, json!({"results": results}))
            }
            ("POST", p @ ("/crm/v3/objects/tasks" | "/crm/v3/objects/notes")) => {
                let kind = p.rsplit('/').next().unwrap();
                let props = &body["properties"];
                if let Some(owner) = props["hubspot_owner_id"].as_str()
                    && !d["owners"].as_array().unwrap().contains(&json!(owner))
                {
                    return ok(
                        400,
                        json!({"status": "error", "message": "Property values were not valid: [{\"isValid\":false,\"message\":\"999 is not a valid owner id\",\"error\":\"INVALID_OWNER_ID\",\"name\":\"hubspot_owner_id\"}]",
                        "correlationId": "a43683b0-5717-4ceb-80b4-104d02915d8c", "category": "VALIDATION_ERROR"}),
                    );
                }
                if !props["hs_timestamp"].is_string() {
                    return ok(
                        400,
                        json!({"status": "error", "message": "Property values were not valid",
                        "errors": [{"message": "hs_timestamp is required", "in": "hs_timestamp"}], "category": "VALIDATION_ERROR"}),
                    );
                }
                let id = format!(
                    "{}",
                    9000 + d["tasks"].as_array().unwrap().len()
                        + d["notes"].as_array().unwrap().len()
                );
                let obj = json!({"id": id, "properties": props, "associations": body["associations"],
                    "createdAt": "2026-03-02T10:00:00Z", "updatedAt": "2026-03-02T10:00:00Z", "archived": false});
                d[kind].as_array_mut().unwrap().push(obj.clone());
                ok(201, obj)
            }
            ("PATCH", p) if p.starts_with("/crm/v3/objects/companies/") => {
                d["patches"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"path": p, "body": body}));
                ok(
                    200,
                    json!({"id": p.rsplit('/').next(), "properties": body["properties"]}),
                )
            }
            _ => ok(
                404,
                json!({"status": "error", "message": format!("no route {path}"), "category": "OBJECT_NOT_FOUND"}),
            ),
        }
    }
}

pub mod salesforce {
    //! Salesforce REST: SOQL queries (two records per batch, then
    //! `nextRecordsUrl`), composite requests of queries, Task upsert by
    //! external id (201 created, 204 updated), Account update, OAuth
    //! refresh whose `instance_url` is this server. The first session
    //! (`sf-1`) has expired.

    use super::*;

    const PAGE: usize = 2;
    pub const VERSION: &str = "v66.0";

    pub async fn start(accounts: Value, contacts: Value, roles: Value) -> Mock {
        let data = json!({"accounts": accounts, "contacts": contacts, "roles": roles,
            "tasks": {}, "patches": [], "tokens": ["sf-1"], "base": "",
            "tasks_read": [
                {"attributes": {"type": "Task"}, "Id": "00TD00000045abcA", "WhatId": "001D000000IRFmaIAH",
                 "Subject": "QBR prep", "Status": "Completed", "Priority": "Normal", "ActivityDate": "2026-01-10",
                 "IsClosed": true, "CreatedDate": "2026-01-05T09:00:00.000+0000", "SystemModstamp": "2026-01-06T09:00:00.000+0000"},
                {"attributes": {"type": "Task"}, "Id": "00TD00000045abcB", "WhatId": "006D000000Opp01",
                 "Subject": "About an opportunity", "Status": "Not Started", "Priority": "Normal", "ActivityDate": null,
                 "IsClosed": false, "CreatedDate": "2026-01-05T09:00:00.000+0000", "SystemModstamp": "2026-01-05T09:00:00.000+0000"}]});
        let mock = Mock::start(data, Arc::new(handle)).await;
        mock.data.lock().unwrap()["base"] = json!(mock.base);
        mock
    }

    fn decode(q: &str) -> String {
        let q = q.replace('+', " ");
        let mut out = Vec::new();
        let b = q.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&q[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn stamp(s: &str) -> i64 {
        let fixed = format!("{}:{}", &s[..s.len() - 2], &s[s.len() - 2..]);
        fixed.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    /// The records of a SOQL query this server understands, from `offset`.
    fn query(d: &Value, soql: &str, offset: usize) -> Value {
        let ids_in = || -> Vec<String> {
            let list = soql
                .split("IN (")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap();
            list.split(',')
                .map(|s| s.trim().trim_matches('\'').to_string())
                .collect()
        };
        let of_accounts = |table: &str| -> Value {
            let ids = ids_in();
            let recs: Vec<Value> = d[table]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| ids.contains(&c["AccountId"].as_str().unwrap().to_string()))
                .cloned()
                .collect();
            json!({"totalSize": recs.len(), "done": true, "records": recs})
        };
        if soql.contains("FROM Contact ") {
            return of_accounts("contacts");
        }
        if soql.contains("FROM AccountContactRole WHERE AccountId IN") {
            return of_accounts("roles");
        }
        if soql.contains("FROM Account WHERE Id IN") {
            let ids = ids_in();
            let recs: Vec<Value> = d["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| ids.contains(&a["Id"].as_str().unwrap().to_string()))
                .cloned()
                .collect();
            return json!({"totalSize": recs.len(), "done": true, "records": recs});
        }
        assert!(soql.starts_with("SELECT Id, SystemModstamp, "), "{soql}");
        let table = if soql.contains(" FROM Task ") {
            "tasks_read"
        } else if soql.contains(" FROM AccountContactRole ") {
            "roles"
        } else {
            "accounts"
        };
        let since = soql
            .split("SystemModstamp >= ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(
            !since.starts_with('\''),
            "SOQL DateTime literals are unquoted: {soql}"
        );
        let since = since.parse::<jiff::Timestamp>().unwrap().as_second();
        let mut recs: Vec<Value> = d[table]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| stamp(a["SystemModstamp"].as_str().unwrap()) >= since)
            .cloned()
            .collect();
        recs.sort_by_key(|a| stamp(a["SystemModstamp"].as_str().unwrap()));
        let total = recs.len();
        let page: Vec<Value> = recs.into_iter().skip(offset).take(PAGE).collect();
        let next = offset + page.len();
        let mut out = json!({"totalSize": total, "done": next >= total, "records": page});
        if next < total {
            out["nextRecordsUrl"] = json!(format!(
                "/services/data/{VERSION}/query/01gRO0000016PIAYA2-{table}-{since}-{next}"
            ));
        }
        out
    }

    fn handle(d: &mut Value, r: &Req) -> Resp {
        let path = r.path().to_string();
        if path == "/services/oauth2/token" {
            if !r.body.contains("grant_type=refresh_token")
                || !r.body.contains("refresh_token=sf-refresh")
            {
                return ok(
                    400,
                    json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}),
                );
            }
            let token = format!("sf-{}", d["tokens"].as_array().unwrap().len() + 1);
            d["tokens"].as_array_mut().unwrap().push(json!(token));
            return ok(
                200,
                json!({"access_token": token, "signature": "HfBA4=", "scope": "refresh_token api id",
                "instance_url": d["base"], "id": "https://login.salesforce.com/id/00Dx/005x",
                "token_type": "Bearer", "issued_at": "1708058728442"}),
            );
        }
        let token = r
            .header("authorization")
            .unwrap_or("")
            .trim_start_matches("Bearer ")
            .to_string();
        if token == "sf-1" || !d["tokens"].as_array().unwrap().contains(&json!(token)) {
            return ok(
                401,
                json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
            );
        }
        let base = format!("/services/data/{VERSION}");
        let rest = path.strip_prefix(&base).unwrap_or("").to_string();
        match (r.method.as_str(), rest.as_str()) {
            ("GET", "/query") => ok(200, query(d, &decode(&r.query("q").unwrap()), 0)),
            ("GET", p) if p.starts_with("/query/") => {
                let mut parts = p.rsplit('-');
                let offset: usize = parts.next().unwrap().parse().unwrap();
                let since: i64 = parts.next().unwrap().parse().unwrap();
                let object = match parts.next() {
                    Some("tasks_read") => "Task",
                    Some("roles") => "AccountContactRole",
                    _ => "Account",
                };
                let since = jiff::Timestamp::from_second(since)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let soql = format!(
                    "SELECT Id, SystemModstamp, Name FROM {object} WHERE SystemModstamp >= {since} ORDER BY SystemModstamp ASC"
                );
                ok(200, query(d, &soql, offset))
            }
            ("POST", "/composite") => {
                let body = r.json();
                let responses: Vec<Value> = body["compositeRequest"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        let url = s["url"].as_str().unwrap();
                        let q = url.split("?q=").nth(1).unwrap();
                        json!({"body": query(d, &decode(q), 0), "httpHeaders": {}, "httpStatusCode": 200, "referenceId": s["referenceId"]})
                    })
                    .collect();
                ok(200, json!({"compositeResponse": responses}))
            }
            ("PATCH", p) if p.starts_with("/sobjects/Task/Touchpilot_Key__c/") => {
                let key = p.rsplit('/').next().unwrap().to_string();
                let body = r.json();
                if body["Subject"].as_str().unwrap_or("").is_empty() {
                    return ok(
                        400,
                        json!([{"message": "Required fields are missing: [Subject]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Subject"]}]),
                    );
                }
                if d["tasks"].get(&key).is_some() {
                    d["tasks"][&key]["fields"] = body;
                    return Resp {
                        status: 204,
                        body: Value::Null,
                        ..Resp::default()
                    };
                }
                let id = format!("00T{:015}", d["tasks"].as_object().unwrap().len() + 1);
                d["tasks"][&key] = json!({"id": id, "fields": body});
                ok(
                    201,
                    json!({"id": id, "errors": [], "success": true, "created": true}),
                )
            }
            ("GET", p) if p.starts_with("/sobjects/Task/Touchpilot_Key__c/") => {
                let key = p.rsplit('/').next().unwrap();
                match d["tasks"].get(key) {
                    Some(t) => ok(200, json!({"attributes": {"type": "Task"}, "Id": t["id"]})),
                    None => ok(
                        404,
                        json!([{"message": "Provided external ID field does not exist or is not accessible", "errorCode": "NOT_FOUND"}]),
                    ),
                }
            }
            ("PATCH", p) if p.starts_with("/sobjects/Account/") => {
                d["patches"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"path": p, "body": r.json()}));
                Resp {
                    status: 204,
                    body: Value::Null,
                    ..Resp::default()
                }
            }
            _ => ok(
                404,
                json!([{"message": format!("The requested resource does not exist: {path}"), "errorCode": "NOT_FOUND"}]),
            ),
        }
    }
}

pub mod jira {
    //! Jira Cloud: `POST /rest/api/3/search/jql` (JQL on `updated` or a
    //! label, two issues per page with `nextPageToken`), issue create, and
    //! the removed `/rest/api/3/search` answering 410 as it now does.

    use super::*;

    pub const EMAIL: &str = "bot@acme.example";
    pub const TOKEN: &str = "jira-api-token";
    const PAGE: usize = 2;

    pub async fn start(issues: Value) -> Mock {
        Mock::start(json!({"issues": issues, "created": 0}), Arc::new(handle)).await
    }

    fn time(s: &str) -> i64 {
        let fixed = format!("{}:{}", &s[..s.len() - 2], &s[s.len() - 2..]);
        fixed.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    fn handle(d: &mut Value, r: &Req) -> Resp {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}"))
        );
        if r.header("authorization") != Some(expected.as_str()) {
            return ok(
                401,
                json!({"errorMessages": ["User is not logged in."], "errors": {}}),
            );
        }
        let body = r.json();
        match (r.method.as_str(), r.path()) {
            ("POST", "/rest/api/3/search/jql") => {
                let jql = body["jql"].as_str().unwrap().to_string();
                let mut hits: Vec<Value> = d["issues"].as_array().unwrap().clone();
                if let Some(label) = jql
                    .strip_prefix("labels = \"")
                    .and_then(|s| s.strip_suffix('"'))
                {
                    hits.retain(|i| {
                        i["fields"]["labels"]
                            .as_array()
                            .unwrap()
                            .contains(&json!(label))
                    });
                } else {
                    let lit = jql
                        .split("updated >= \"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap();
                    let since = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", lit)
                        .unwrap()
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .unwrap()
                        .timestamp()
                        .as_second();
                    assert!(jql.ends_with(" ORDER BY updated ASC"), "{jql}");
                    hits.retain(|i| time(i["fields"]["updated"].as_str().unwrap()) >= since);
                    hits.sort_by_key(|i| time(i["fields"]["updated"].as_str().unwrap()));
                }
                let from: usize = body["nextPageToken"]
                    .as_str()
                    .map(|t| t.trim_start_matches("tok").parse().unwrap())
                    .unwrap_or(0);
                let max = body["maxResults"].as_u64().unwrap_or(50) as usize;
                let page: Vec<Value> = hits
                    .iter()
                    .skip(from)
                    .take(max.min(PAGE))
                    .cloned()
                    .collect();
                let next = from + page.len();
                let last = next >= hits.len();
                ok(
                    200,
                    json!({"issues": page, "nextPageToken": if last { Value::Null } else { json!(format!("tok{next}")) }, "isLast": last}),
                )
            }
            ("POST", "/rest/api/3/issue") => {
                let f = &body["fields"];
                if f["summary"].as_str().unwrap_or("").is_empty() {
                    return ok(
                        400,
                        json!({"errorMessages": [], "errors": {"summary": "You must specify a summary of the issue."}}),
                    );
                }
                assert_eq!(
                    f["description"]["type"], "doc",
                    "v3 descriptions are Atlassian Document Format"
                );
                let n = d["created"].as_u64().unwrap() + 1;
                d["created"] = json!(n);
                let (id, key) = (
                    format!("{}", 10100 + n),
                    format!("{}-{}", f["project"]["key"].as_str().unwrap(), 100 + n),
                );
                let mut fields = f.clone();
                fields["created"] = json!("2026-03-02T10:00:00.000+0000");
                fields["updated"] = json!("2026-03-02T10:00:00.000+0000");
                d["issues"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"id": id, "key": key, "fields": fields}));
                ok(
                    201,
                    json!({"id": id, "key": key, "self": format!("https://acme.atlassian.net/rest/api/3/issue/{id}")}),
                )
            }
            (_, "/rest/api/3/search") => ok(
                410,
                json!({"errorMessages": ["The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"], "errors": {}}),
            ),
            _ => ok(404, json!({"errorMessages": ["Not found"], "errors": {}})),
        }
    }
}
