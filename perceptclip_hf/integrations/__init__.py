"""PerceptCLIP inside the engines people already scale with: :mod:`.ray` (Ray Data, extra ``[ray]``)."""
