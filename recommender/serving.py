def loaded_versions() -> dict:
    return {}
