"""One HTTP GET from inside a container (run there as `python3 -c <this file> URL HEADERS_JSON TIMEOUT`).

Prints the status code on the first line, then the body as it came. Standard library only: it runs
with the container's own python3.
"""

import json
import sys
import urllib.error
import urllib.request

request = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))
try:
    response = urllib.request.urlopen(request, timeout=float(sys.argv[3]))
    code, body = response.status, response.read()
except urllib.error.HTTPError as error:
    code, body = error.code, error.read()
sys.stdout.write(f"{code}\n")
sys.stdout.flush()
sys.stdout.buffer.write(body)
