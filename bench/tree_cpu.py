"""Wall time and CPU time of a command and every process it starts (Ray daemons and workers included):
`python bench/tree_cpu.py CMD...`. The process tree is sampled every 0.2 s; each process counts its own
user + system time as last seen (a process living less than 0.2 s may be missed). For comparing a test
file before and after a change on a machine other people load: CPU time moves less than wall time."""
import subprocess, sys, time, psutil
t0 = time.time()
p = subprocess.Popen(sys.argv[1:])
root = psutil.Process(p.pid)
seen = {}
while p.poll() is None:
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        procs = []
    for q in procs:
        try:
            c = q.cpu_times()
            seen[(q.pid, q.create_time())] = c.user + c.system
        except psutil.Error:
            pass
    time.sleep(0.2)
wall = time.time() - t0
print(f"CPU {sum(seen.values()):.1f} s over {len(seen)} processes, wall {wall:.1f} s, rc {p.returncode}", file=sys.stderr)
