"""`unison deploy kuberay`: the Kubernetes manifests for the KubeRay operator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from unison.cli.common import _fail, _settings, console

app = typer.Typer(
    help="Cluster deployment: Kubernetes manifests for the KubeRay operator, rendered from deploy/serve.yaml so "
    "the cluster runs the Serve config a laptop runs (docs/DEPLOY.md).",
    no_args_is_help=True,
)


@app.command("kuberay")
def deploy_kuberay(
    out: Annotated[Path, typer.Option(help="Directory the manifests are written to.")] = Path("deploy/kuberay"),
    image: Annotated[str | None, typer.Option(help="CPU image (docker/Dockerfile) of the head, the CPU workers and "
                                                   "the batch job, as pushed, e.g. "
                                                   "registry.example.com/unison:0.1.0-cpu. Default: "
                                                   "unison:0.1.0-cpu.")] = None,
    gpu_image: Annotated[str | None, typer.Option(help="GPU image (docker/Dockerfile.gpu) of the GPU workers. "
                                                       "Default: --image with -cpu replaced by -gpu.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace. Default: unison.")] = None,
    serve_gpus: Annotated[float | None, typer.Option(help="GPUs per Model and StreamConsumer replica; above 0 they "
                                                          "run CUDA with the fp16 variant on the GPU worker group. "
                                                          "Default: 0 (CPU).")] = None,
    values: Annotated[Path | None, typer.Option(help="YAML file of KubeRayConfig fields (worker groups, claims, "
                                                     "addresses, batch job...); the options above override it. "
                                                     "Every field: platform/unison/ops/kuberay.py.")] = None,
    serve_config: Annotated[Path | None, typer.Option(help="Serve config to render. Default: `serving.config_file` "
                                                           "(deploy/serve.yaml).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the files in --out differ from "
                                                        "a fresh render (for CI).")] = False,
) -> None:
    """Render the KubeRay manifests: ConfigMap, storage claims, RayService, RayJob and PodMonitors.

    The RayService's `serveConfigV2` is the Serve config with only what a cluster needs changed (a proxy on
    every node on 0.0.0.0:8000, replica bounds, GPUs when asked); `rayVersion` is the Ray version Unison pins.
    The RayJob runs `python pipelines/batch_predict.py` on a cluster of its own, deleted when the job ends.
    Credentials are never written: pods read them from the Secret `unison-credentials` (docs/DEPLOY.md says how
    to create it). Render again whenever deploy/serve.yaml changes; `--check` tells CI when someone forgot.
    With the KubeRay operator in the cluster, `kubectl apply` every file but rayjob.yaml; each
    `kubectl create -f rayjob.yaml` is one batch run.
    """
    import yaml
    from pydantic import ValidationError

    from unison.ops import kuberay

    settings = _settings()
    fields: dict[str, Any] = {"model_name": settings.model.name, "model_alias": settings.model.alias}
    if values is not None:
        try:
            loaded = yaml.safe_load(values.read_text())
        except (OSError, yaml.YAMLError) as exc:
            _fail(f"cannot read {values}: {exc}", code=2)
        if not isinstance(loaded, dict):
            _fail(f"{values} must be a mapping of KubeRayConfig fields", code=2)
        fields.update(loaded)
    options = {"image": image, "gpu_image": gpu_image, "namespace": namespace, "serve_gpus": serve_gpus}
    fields.update({key: value for key, value in options.items() if value is not None})
    try:
        config = kuberay.KubeRayConfig.model_validate(fields)
        rendered = kuberay.render(config, serve_config or settings.serving.config_file)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid KubeRay settings: {problems}", code=2)
    except kuberay.KubeRayError as exc:
        _fail(str(exc), code=2)
    if check:
        stale = kuberay.stale(rendered, out)
        if stale:
            _fail(f"{out}: {', '.join(stale)} differ from a fresh render; run `unison deploy kuberay --out {out}`")
        console.print(f"  {out}: up to date", markup=False)
        return
    written = kuberay.write(rendered, out)
    for path in written:
        console.print(f"  wrote {path}", markup=False, highlight=False)
    service = " ".join(f"-f {path}" for path in written if path.name != "rayjob.yaml")
    console.print(f"  deploy:    kubectl create namespace {config.namespace}; create the Secret "
                  f"{config.secret_name} (docs/DEPLOY.md); kubectl apply {service}", markup=False, highlight=False)
    console.print(f"  batch run: kubectl create -f {out / 'rayjob.yaml'}", markup=False, highlight=False)
