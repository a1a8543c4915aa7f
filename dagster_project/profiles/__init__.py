"""Pipeline profiles: a params file and its request, copied into a fresh pipeline root by `unlearn profile init`."""
