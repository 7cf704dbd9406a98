"""Online serving on Ray Serve: HTTP ingress (/v1 and OIP v2), the model deployment, deployment tooling."""
