"""The storage layer's pure parts: URL detection, redaction, the S3 endpoint as the AWS SDKs read
it, Hugging Face URLs (revision, config and split selection) mapped onto the Hub's file layout, and
recipes that may say where a store is but never hold its credentials. (The real S3 server tests are
in test_object_store.py; nothing here touches the network.)"""

from __future__ import annotations

import fsspec
import pytest

from thresher.pipeline import fs
from thresher.pipeline.errors import InputError, RecipeError, ThresherError


def test_is_url():
    assert fs.is_url("s3://b/k") and fs.is_url("hf://datasets/a/b") and fs.is_url("gs://b")
    assert not fs.is_url("/data/x.jsonl") and not fs.is_url("file:///x") and not fs.is_url("demo:quickstart")
    with pytest.raises(ThresherError, match="unsupported storage scheme 'ftp://'"):
        fs.protocol("ftp://host/x")


def test_redact_hides_user_info_and_signatures():
    text = "cannot read s3://AKIA123:s3cr3t@bucket/k and https://h/x?X-Amz-Signature=abc&x=1 or az://c/p?sig=zzz"
    out = fs.redact(text)
    assert "AKIA123" not in out and "s3cr3t" not in out and "abc" not in out and "zzz" not in out
    assert "s3://***@bucket/k" in out and "x=1" in out


def test_s3_endpoint_as_the_aws_sdks_read_it():
    env = {"AWS_ENDPOINT_URL": "http://general:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2", "AWS_REGION": "eu-west-1",
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    opts = fs._s3_options({}, env)
    assert opts["endpoint_url"] == "http://s3only:2" and opts["client_kwargs"] == {"region_name": "eu-west-1"}
    assert (opts["key"], opts["secret"]) == ("k", "s")
    assert fs._s3_options({}, {"AWS_ENDPOINT_URL": "http://general:1"})["endpoint_url"] == "http://general:1"
    assert fs._s3_options({"endpoint_url": "http://recipe:3"}, env)["endpoint_url"] == "http://recipe:3"
    assert "key" not in fs._s3_options({}, {"AWS_PROFILE": "p"})


def test_storage_repr_shows_no_secret():
    st = fs.Storage({"endpoint_url": "http://e"}, {}, {"AWS_SECRET_ACCESS_KEY": "topsecret"})
    assert "topsecret" not in repr(st)


@pytest.mark.parametrize("url,base,select", [
    ("hf://datasets/org/name", "hf://datasets/org/name", None),
    ("hf://datasets/org/name@v1.0/data", "hf://datasets/org/name@v1.0/data", None),
    ("hf://datasets/org/name?split=train", "hf://datasets/org/name", {"split": "train"}),
    ("hf://datasets/org/name@~parquet?config=en&split=test", "hf://datasets/org/name@refs/convert/parquet",
     {"config": "en", "split": "test"}),
    ("hf://datasets/org/name@refs/pr/3/data/*.jsonl", "hf://datasets/org/name@refs/pr/3/data/*.jsonl", None),
])
def test_hf_urls(url, base, select):
    assert fs.hf_selection(url) == (base, select)


def test_hf_url_errors():
    with pytest.raises(InputError, match="expected hf://datasets/ORG/NAME"):
        fs.hf_selection("hf://datasets/only-org")
    with pytest.raises(InputError, match="unknown selection 'subset=x'"):
        fs.hf_selection("hf://datasets/org/name?subset=x")


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hub repository's files in fsspec's memory filesystem, standing in for HfFileSystem (the
    same fsspec calls: glob, find, isfile, isdir, open)."""
    mem = fsspec.filesystem("memory")
    root = "/datasets/org/name"
    for f in ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
              "data/test-00000-of-00001.parquet", "fr/train/0000.parquet", "en/train/0000.parquet",
              "en/validation/0000.parquet"]:
        mem.pipe_file(f"{root}/{f}", b"x")
    monkeypatch.setattr(fs, "filesystem", lambda url, output=False: (mem, "/" + url.split("://", 1)[1].split("@")[0]))
    yield mem
    mem.rm(root, recursive=True)


def test_hf_split_and_config_selection(fake_hub):
    names = lambda url, glob=False: [rel for _, rel in fs.expand(url, glob)]  # noqa: E731
    assert names("hf://datasets/org/name/data?split=train") == ["train-00000-of-00002.parquet",
                                                                "train-00001-of-00002.parquet"]
    assert names("hf://datasets/org/name?config=en&split=train") == ["en/train/0000.parquet"]
    assert names("hf://datasets/org/name?config=en") == ["en/train/0000.parquet", "en/validation/0000.parquet"]
    assert names("hf://datasets/org/name/data/test-*.parquet", True) == ["test-00000-of-00001.parquet"]
    urls = [u for u, _ in fs.expand("hf://datasets/org/name?split=train", False)]
    assert urls[0].startswith("hf://") and urls[0].endswith("datasets/org/name/data/train-00000-of-00002.parquet")


def test_recipe_refuses_credentials_and_never_echoes_them():
    from thresher.pipeline.recipe import parse_recipe

    text = ("input: {paths: [s3://b/in/], storage_options: {endpoint_url: 'http://minio:9000', "
            "aws_secret_access_key: hunter2}}\noutput: {path: out}\nprocess: []")
    with pytest.raises(RecipeError, match="may not hold credentials") as e:
        parse_recipe(text)
    assert "hunter2" not in str(e.value)
    ok = parse_recipe("input: {paths: [s3://b/in/], storage_options: {endpoint_url: 'http://minio:9000'}}\n"
                      "output: {path: 's3://b/out', storage_options: {region: us-east-1}}\nprocess: []")
    plain = parse_recipe("input: {paths: [s3://b/in/]}\noutput: {path: 's3://b/out'}\nprocess: []")
    assert ok.fingerprint() == plain.fingerprint()  # where the store is does not change the output
