"""S3 in and out through a real S3 endpoint on 127.0.0.1 (moto server), with the production clients."""
import io

import boto3
import pyarrow.parquet as pq
import pytest

from folioscan.pipeline.cli import main
from folioscan.pipeline.config import JobConfig
from folioscan.pipeline.job import run_job
from tests.helpers import PARAGRAPHS, cer, png_bytes, scanned_pdf


@pytest.fixture(scope="module")
def buckets(s3_endpoint, page_images):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for b in ("scans", "corpus"):
        s3.create_bucket(Bucket=b)
    s3.put_object(Bucket="scans", Key="in/book_a.pdf", Body=scanned_pdf(page_images[:2]))
    s3.put_object(Bucket="scans", Key="in/book_b/0001.png", Body=png_bytes(page_images[2]))
    s3.put_object(Bucket="scans", Key="in/book_b/0002.png", Body=png_bytes(page_images[0]))
    s3.put_object(Bucket="scans", Key="in/zero.pdf", Body=b"")
    s3.put_object(Bucket="scans", Key="elsewhere/other.pdf", Body=scanned_pdf(page_images[:1]))
    return s3


def read_s3_table(s3, bucket, prefix):
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    return [pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())).to_pandas() for k in keys]


@pytest.mark.ray
def test_s3_to_s3_through_ray(buckets, s3_endpoint, ray_local):
    cfg = JobConfig(source="s3://scans/in/", output="s3://corpus/run1", endpoint_url=s3_endpoint,
                    executor="ray", shard_docs=2, progress=False)
    summary = run_job(cfg)
    assert summary.documents == 3 and summary.documents_failed == 1 and summary.pages == 4
    docs = read_s3_table(buckets, "corpus", "run1/documents/")
    pages = read_s3_table(buckets, "corpus", "run1/pages/")
    assert len(docs) == len(pages) == 2  # two committed shards
    import pandas as pd

    docs, pages = pd.concat(docs), pd.concat(pages)
    assert set(docs.source_uri) == {"s3://scans/in/book_a.pdf", "s3://scans/in/book_b", "s3://scans/in/zero.pdf"}
    assert docs.set_index("source_uri").loc["s3://scans/in/zero.pdf", "error"].endswith("zero-byte object")
    book_b = pages[pages.source_uri == "s3://scans/in/book_b"].sort_values("page_index")
    assert cer(book_b.text.iloc[0], PARAGRAPHS[2]) < 0.05 and cer(book_b.text.iloc[1], PARAGRAPHS[0]) < 0.05
    again = run_job(cfg.model_copy(update={"executor": "local"}))
    assert again.documents == 0 and again.documents_skipped == 3


def test_manifest_on_s3_and_local_output(buckets, s3_endpoint, tmp_path):
    buckets.put_object(Bucket="scans", Key="lists/m.txt", Body=b"s3://scans/elsewhere/other.pdf\ns3://scans/in/gone.pdf\n")
    out = str(tmp_path / "out")
    code = main(["run", "s3://scans/lists/m.txt", out, "--endpoint-url", s3_endpoint, "--executor", "local", "--quiet"])
    assert code == 1  # one listed object does not exist
    docs = pq.read_table(f"{out}/documents").to_pandas().set_index("source_uri")
    assert docs.loc["s3://scans/elsewhere/other.pdf", "status"] == "ok"
    assert "does not exist" in docs.loc["s3://scans/in/gone.pdf", "error"]


def test_missing_buckets_fail_fast_with_a_clear_message(buckets, s3_endpoint, tmp_path, capsys):
    assert main(["run", "s3://no-such-bucket/x/", str(tmp_path / "o"), "--endpoint-url", s3_endpoint, "--executor", "local"]) == 2
    assert "s3://no-such-bucket/x/: listing failed: bucket does not exist" in capsys.readouterr().err
    assert main(["run", "s3://scans/in/", "s3://no-output-bucket/o", "--endpoint-url", s3_endpoint, "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "s3://no-output-bucket" in err and "testing" not in err  # names the bucket, never a credential


def test_one_client_per_process_endpoint_and_credentials(s3_endpoint, buckets, monkeypatch):
    """A store unpickled in a loader task, and every other store of the same endpoint, reuse the
    process's client (building one costs ~0.1 s of CPU: every book paid for one before)."""
    import pickle

    from folioscan.pipeline.storage import S3Store

    first = S3Store(s3_endpoint)
    again = pickle.loads(pickle.dumps(first))
    assert again.client is first.client and S3Store(s3_endpoint).client is first.client
    assert next(iter(again.list("s3://scans/in/"))).uri.startswith("s3://scans/in/")  # and it works
    assert S3Store(s3_endpoint, region="eu-west-1").client is not first.client
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "another-key")
    assert S3Store(s3_endpoint).client is not first.client  # other credentials, another client


def test_a_folder_of_more_than_a_thousand_objects_is_listed_whole(s3_endpoint, buckets):
    """`ls` asks ListObjectsV2 itself (not botocore's paginator) and follows its continuation tokens:
    1,002 objects take two LISTs, and none is lost or listed twice; the folder's sub-folders are not listed."""
    from concurrent.futures import ThreadPoolExecutor

    from folioscan.pipeline.storage import S3Store

    keys = [f"many/{i:05d}" for i in range(1002)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: buckets.put_object(Bucket="corpus", Key=k, Body=b"x"), keys + ["many/sub/deeper"]))
    store = S3Store(s3_endpoint)
    assert store.ls("s3://corpus/many") == [k.split("/")[1] for k in keys]
    assert store.ls("s3://corpus/many/", prefix="0100") == ["01000", "01001"]
