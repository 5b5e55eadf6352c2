"""slurm-trigger's Chalice app: only wiring. Every handler calls into chalicelib."""
from chalice import Chalice

app = Chalice(app_name="slurm-trigger")
