-- wrk script: POST one AdmissionReview (the 4 KB Deployment) over and over.
local f = assert(io.open(os.getenv("CK8S_REVIEW") or "review.json", "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
