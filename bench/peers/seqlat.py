# Session 6: N sequential POSTs of the bench event over one keep-alive connection; prints p50/p90 ms.
# seqlat.py URL N: N sequential POSTs of the bench event over one keep-alive connection; prints p50/p90 ms
import http.client, json, sys, time, statistics
url=sys.argv[1]; n=int(sys.argv[2])
host,rest=url.split("//")[1].split("/",1)
h,p=host.split(":")
c=http.client.HTTPConnection(h,int(p))
body=json.dumps({"account_id":"acc-123","type":"ticket.created","severity":"high","email":"a@example.com","name":"Ann"})
ts=[]
for i in range(n):
    t=time.perf_counter(); c.request("POST","/"+rest,body,{"Content-Type":"application/json"}); r=c.getresponse(); r.read(); ts.append((time.perf_counter()-t)*1000)
    assert r.status==202, r.status
ts.sort()
print(f"sequential n={n} p50={ts[n//2]:.2f} p90={ts[int(n*.9)]:.2f} ms")
