"""The usual starting point, for comparison: a plain FastAPI + transformers PyTorch service that scores each
request alone (online features from the same Feast store, the same transform, the PyTorch reference model that
the ONNX artifact was exported from; no batching, no ONNX Runtime).

    UNISON_... .venv/bin/python benchmarks/baseline_server.py --port 18001 --model triage:production

Used by bench_serve.py; not part of the platform.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def create_app(model_ref: str, threads: int) -> Any:
    import pandas as pd
    import torch
    from fastapi import FastAPI
    from transformers import AutoTokenizer

    from unison.config import load_settings
    from unison.features import transform
    from unison.features.store import Features
    from unison.model import Registry
    from unison.model.export import build_reference, inspect_source
    from unison.model.head import TriageHead

    torch.set_num_threads(threads)
    settings = load_settings()
    artifact = Registry(settings.model.registry_dir).load(model_ref)
    source = inspect_source(Path(artifact.manifest.source_model["path"]))
    model = build_reference(source, TriageHead.load(artifact.file("head.npz"))).eval()
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    features = Features(settings)
    labels = list(artifact.manifest.labels)
    numeric = list(artifact.manifest.numeric_features)
    app = FastAPI(title="baseline")

    @app.post("/v1/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        out = []
        for ticket in body["instances"]:
            row = pd.DataFrame([ticket]).merge(features.online([ticket["customer_id"]]), on="customer_id")
            inputs = transform(row)
            encoded = tokenizer(inputs["text"].iloc[0], truncation=True, max_length=artifact.manifest.max_length,
                                return_tensors="pt")
            vector = torch.tensor(inputs[numeric].to_numpy(dtype=np.float32))
            with torch.inference_mode():
                result = model(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], vector)
            _, probabilities, priority, _ = result
            p = probabilities[0].numpy()
            out.append({"ticket_id": ticket["ticket_id"], "category": labels[int(p.argmax())],
                        "probabilities": dict(zip(labels, p.tolist(), strict=True)),
                        "priority": float(priority[0])})
        return {"predictions": out}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="triage:production")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.threads), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
