from django.core.management.base import BaseCommand

from accounts.services import create_api_key


class Command(BaseCommand):
    help = "Create an API key for a client app; the key is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name that says which client app holds the key")
        parser.add_argument("--capture-only", action="store_true",
                            help="a key for web pages: it may only send events (capture "
                                 "endpoints and POST /api/v1/events)")

    def handle(self, *args, name: str, capture_only: bool, **options):
        _, key = create_api_key(name=name, capture_only=capture_only)
        kind = "capture-only API key" if capture_only else "API key"
        self.stdout.write(f"Created {kind} {name!r}. Store it now: it is not shown again.")
        self.stdout.write(key)
