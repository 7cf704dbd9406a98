"""Batch prediction job. Submit it as any Ray job:

    ray job submit --address http://<head>:8265 --working-dir . -- \
        python pipelines/batch_predict.py --tickets <uri> --output <uri> --model triage:production

or with `unison batch submit`, which does the same through Ray's job SDK and prints this command. Unison's
configuration (registry, feature store, data) comes from UNISON_* environment variables or unison.yaml.
"""

import argparse
import json
import sys

from unison.batch import BatchJobConfig, BatchSchemaError, run
from unison.config import ConfigError, load_settings
from unison.ops.logs import setup_logging


def parse(argv: list[str]) -> BatchJobConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, field in BatchJobConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                                help=field.description)
        else:
            parser.add_argument(flag, required=field.is_required(), default=None if field.is_required()
                                else field.default, help=field.description)
    values = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return BatchJobConfig.model_validate(values)


def main(argv: list[str]) -> int:
    try:
        setup_logging()
        config = parse(argv)
        settings = load_settings()
        manifest = run(config, settings)
    except (BatchSchemaError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
