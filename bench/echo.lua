-- wrk script for the JSON POST echo scenario: a 1 KiB JSON body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data": "' .. string.rep("a", 1010) .. '"}'
