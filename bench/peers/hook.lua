wrk.method = "POST"
wrk.body   = '{"account_id":"acc-123","text":"Hi Ann, we saw your high-severity ticket.created on account acc-123. Our team is on it.","to":"a@example.com"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["user-agent"] = "touchpilot/0.1.0"
wrk.headers["accept"] = "*/*"
