from typing import Any

from django.core.management.base import BaseCommand

from rollout.demo import seed_demo


class Command(BaseCommand):
    help = "Load the demo data (environments, workloads, cohorts, flags) once; does nothing if present."

    def handle(self, *args: Any, **options: Any) -> None:
        if seed_demo():
            self.stdout.write(self.style.SUCCESS("Demo data loaded."))
        else:
            self.stdout.write("Demo data already present; nothing to do.")
