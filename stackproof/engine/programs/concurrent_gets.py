"""COUNT concurrent HTTP GETs from inside a container, released together (run there as
`python3 -c <this file> URLS_JSON COUNT HEADER HEADER_FILE TIMEOUT`).

Request i goes to urls[i % len(urls)]; a header's value is read from a file inside the container (the
API key never leaves it). Prints a JSON list of [i, start offset, latency, HTTP status or 0, the
first 200 bytes of the body or the exception's name]. Standard library only.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

urls, count, header, header_file, timeout = (json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                             float(sys.argv[5]))
headers = {}
if header:
    with open(header_file) as value:
        headers[header] = value.read().strip()
start = threading.Barrier(count)
results: list[list] = []
lock = threading.Lock()
t0 = time.monotonic()


def one(i):
    start.wait()
    began = time.monotonic()
    try:
        response = urllib.request.urlopen(urllib.request.Request(urls[i % len(urls)], headers=headers), timeout=timeout)
        code, body = response.status, response.read(200)
    except urllib.error.HTTPError as error:
        code, body = error.code, error.read(200)
    except Exception as error:  # any other failure of one request (refused, reset, timeout) is its outcome
        code, body = 0, type(error).__name__.encode()
    with lock:
        results.append([i, began - t0, time.monotonic() - began, code, body.decode("utf-8", "replace")])


threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.stdout.write(json.dumps(results))
