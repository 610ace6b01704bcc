"""Per-file sums of a pytest-xdist run: `python bench/test_durations.py JUNIT.xml RUN.log [N]`, where the run
was `pytest -n 2 --dist loadfile -v --junitxml=JUNIT.xml ... > RUN.log`. Prints the sum of test times
(junit: setup + call + teardown), the sum per xdist worker (read from -v lines "[gw0] [ 5%] PASSED
tests/...") and the N longest files with their worker."""
import re, sys, collections, xml.etree.ElementTree as ET
xml, log = sys.argv[1], sys.argv[2]
t = ET.parse(xml)
per_file = collections.Counter(); per_test = {}
for tc in t.iter("testcase"):
    f = tc.get("classname").replace(".", "/") + ".py"
    per_file[f] += float(tc.get("time")); per_test[f + "::" + tc.get("name")] = float(tc.get("time"))
worker = {}
for line in open(log):
    m = re.match(r"\[(gw\d)\] \[\s*\d+%\] \w+ (tests/\S+?\.py)::", line)
    if m: worker[m.group(2)] = m.group(1)
per_worker = collections.Counter()
for f, s in per_file.items(): per_worker[worker.get(f, "?")] += s
print("sum", round(sum(per_file.values()), 1), "tests", len(per_test), dict((k, round(v, 1)) for k, v in per_worker.items()))
for f, s in per_file.most_common(int(sys.argv[3]) if len(sys.argv) > 3 else 60):
    print(f"{s:7.1f} {worker.get(f,'?')} {f}")
