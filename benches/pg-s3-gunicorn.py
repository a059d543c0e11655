# gunicorn settings for benches/pg-s3.sh: moto's S3 application in one worker process (moto keeps
# its buckets in that process's memory), with threads, and connections kept alive between
# requests (moto_server's development server closes each one after its response).
import collections
import os

workers = 1
threads = 4
keepalive = 60
control_socket_disable = True

# Requests are counted by method and written when the worker stops, instead of an access log:
# a log line per request cost moto 0.13-0.18 ms of CPU per PUT (a tenth of it).
_counts = collections.Counter()


def pre_request(worker, req):
    _counts[req.method] += 1


def worker_exit(server, worker):
    with open(os.environ["PISTE_BENCH_S3_COUNTS"], "w") as out:
        out.write(" ".join(f"{n} {method}" for method, n in sorted(_counts.items())) + "\n")
