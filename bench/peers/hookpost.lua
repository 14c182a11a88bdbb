-- Session 6: the body our webhook playbook renders, for recv_alone.sh
wrk.method = "POST"
wrk.body   = '{"text":"New high ticket from Ann","to":"a@example.com","account_id":"acc-123"}'
wrk.headers["Content-Type"] = "application/json"
