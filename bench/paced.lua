-- wrk script for a paced background load: every connection waits 10 ms before each request, so
-- the rate is about connections / (10 ms + response time); bench/disconnect.py picks the
-- connection count that gives about half the server's own peak.
function delay()
   return 10
end
