"""The one client TuneLab uses to talk to a serving endpoint, configured by URL.

Chat goes through ``huggingface_hub.InferenceClient`` (OpenAI-style
``/v1/chat/completions``); plain completions, the model list and adapter management
use the OpenAI and vLLM routes over httpx. Those are the routes both TuneLab's
embedded server and vLLM (``--enable-lora`` with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``)
speak, so the same code drives either.
"""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import huggingface_hub
from huggingface_hub import InferenceClient
from huggingface_hub.errors import InferenceTimeoutError
from huggingface_hub.utils import hf_raise_for_status

from backend.errors import AdapterMismatch, AdapterNotFound, Overloaded, PromptTooLong, ServingError

# The HTTP library huggingface_hub reads responses of: httpx2 from its 2.0, httpx before
# (the GPU image has 1.33). The endpoint session must be of the same library.
hub_http = importlib.import_module("httpx2" if int(huggingface_hub.__version__.split(".")[0]) >= 2 else "httpx")


class ServingClient:
    """Talks to a serving endpoint at ``url``; ``token`` is the bearer for load/unload."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.token = token
        # An explicit key, so InferenceClient never forwards a Hugging Face token it finds
        # on this machine to a serving endpoint ("EMPTY" is what vLLM clients send).
        self.inference = EndpointInferenceClient(base_url=self.url, api_key=token or "EMPTY", timeout=timeout)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ServingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """Every model the endpoint serves: the base (no ``parent``) and the adapters."""
        return self._request("GET", "/v1/models")["data"]

    def base_model(self) -> str:
        return next(m["id"] for m in self.models() if not m.get("parent"))

    def adapters(self) -> dict[str, str]:
        """Loaded adapters, name -> folder."""
        return {m["id"]: m.get("root", "") for m in self.models() if m.get("parent")}

    def health(self) -> bool:
        """True when the endpoint answers (``/health`` on TuneLab, TGI and vLLM)."""
        try:
            return self.http.get("/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    # --- generating ---------------------------------------------------------------------------

    def chat(self, model: str, messages: list[dict], **params) -> str:
        """One answer from ``model`` (an adapter's name or the base's)."""
        out = self._call(self.inference.chat_completion, messages, model=model, **params)
        return out.choices[0].message.content or ""

    def chat_token_ids(self, model: str, messages: list[dict], **params) -> tuple[list[int], list[int]]:
        """The prompt's token ids and every token the answer picked (vLLM's ``return_token_ids``;
        TuneLab's endpoint and vLLM give them), for checking an answer against a reference model."""
        body = {"model": model, "messages": messages, **params, "return_token_ids": True}
        answer = self._request("POST", "/v1/chat/completions", json=body, model=model)
        return answer["prompt_token_ids"], answer["choices"][0]["token_ids"]

    def stream_chat(self, model: str, messages: list[dict], **params) -> Iterator[str]:
        """The answer's text, piece by piece, as the endpoint streams it."""
        stream = self._call(self.inference.chat_completion, messages, model=model, stream=True, **params)
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except Exception as exc:  # errors raised while iterating the stream
            raise self._translate(exc, model) from exc

    def complete(self, model: str, prompt: str, **params) -> str:
        """Plain text completion (``/v1/completions``)."""
        body = {"model": model, "prompt": prompt, **params}
        return self._request("POST", "/v1/completions", json=body, model=model)["choices"][0]["text"]

    def compare(self, messages: list[dict], models: list[str], **params) -> dict[str, str]:
        """The same conversation answered by each model, sent at once so the endpoint batches them."""
        with ThreadPoolExecutor(max_workers=max(1, len(models))) as pool:
            futures = {m: pool.submit(self.chat, m, messages, **params) for m in models}
            return {m: f.result() for m, f in futures.items()}

    # --- adapters -----------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str, inplace: bool = False) -> str:
        """Load (or with ``inplace`` replace) adapter ``name`` from the folder ``path``."""
        body = {"lora_name": name, "lora_path": str(path)}
        if inplace:
            body["load_inplace"] = True
        return self._request("POST", "/v1/load_lora_adapter", json=body, model=name, text=True)

    def unload_adapter(self, name: str) -> str:
        return self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name}, model=name, text=True)

    # --- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, json=None, model: str | None = None, text: bool = False):
        try:
            response = self.http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ServingError(f"Cannot reach the serving endpoint at {self.url}: {exc}.",
                               fix="Start it with `tunelab serve`, or set TUNELAB_SERVER_URL.") from exc
        if response.status_code >= 400:
            raise self._error(response.status_code, _error_message(response), model, response.headers)
        return response.text if text else response.json()

    def _call(self, method, *args, model: str | None = None, **kwargs):
        try:
            return method(*args, model=model, **kwargs)
        except Exception as exc:
            raise self._translate(exc, model) from exc

    def _translate(self, exc: Exception, model: str | None) -> Exception:
        response = getattr(exc, "response", None)
        if response is None:
            if type(exc).__name__ in {"ConnectError", "ConnectTimeout"} or "connect" in str(exc).lower():
                return ServingError(f"Cannot reach the serving endpoint at {self.url}: {exc}.",
                                    fix="Start it with `tunelab serve`, or set TUNELAB_SERVER_URL.")
            return exc
        try:
            message = _error_message(response)
        except Exception:
            message = str(exc)
        return self._error(response.status_code, message, model, response.headers)

    def _error(self, status: int, message: str, model: str | None, headers) -> Exception:
        if status == 404 and model:
            try:
                known = [m["id"] for m in self.models()]
            except Exception:
                known = []
            error = AdapterNotFound(model, known)
            error.message = f"{message} (endpoint {self.url})"
            return error
        if status == 429:
            retry = headers.get("retry-after") if headers else None
            return Overloaded(message, retry_after=float(retry) if retry else 1.0)
        if status == 401:
            return ServingError(message, status=401,
                                fix="Pass the endpoint's token (TUNELAB_API_TOKEN or the api_token file).")
        if status == 400 and "context" in message.lower():
            return PromptTooLong(message)
        if status == 400 and "adapter" in message.lower():
            return AdapterMismatch(message)
        return ServingError(f"The serving endpoint answered {status}: {message}", status=status)


class EndpointInferenceClient(InferenceClient):
    """``InferenceClient`` for a serving endpoint that also works with ``HF_HUB_OFFLINE=1``.

    huggingface_hub sends every request through one global session whose hook refuses
    all traffic in offline mode, even to 127.0.0.1. A serving endpoint is not the Hub,
    so this subclass posts through its own session without that hook; everything else
    (payloads, SSE parsing, errors) is InferenceClient's own.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._endpoint_session = hub_http.Client(follow_redirects=True, timeout=None)

    def _inner_post(self, request_parameters, *, stream: bool = False):
        response_cm = self._endpoint_session.stream(
            "POST", request_parameters.url, json=request_parameters.json, content=request_parameters.data,
            headers=request_parameters.headers, cookies=self.cookies, timeout=self.timeout)
        try:
            if stream:
                response = self.exit_stack.enter_context(response_cm)
                hf_raise_for_status(response)
                return response.iter_lines()
            with response_cm as response:
                hf_raise_for_status(response)
                return response.read()
        except hub_http.TimeoutException as error:
            raise InferenceTimeoutError(f"Inference call timed out: {request_parameters.url}") from error


def _error_message(response) -> str:
    try:
        data = response.json()
    except Exception:
        return response.text.strip()[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))
    if isinstance(error, str):
        return error
    if isinstance(data, dict) and "message" in data:  # older vLLM: a flat ErrorResponse
        return str(data["message"])
    return str(data)[:500]
