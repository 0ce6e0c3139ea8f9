from django.core.management.base import BaseCommand

from accounts.services import create_api_key


class Command(BaseCommand):
    help = "Create an API key for a client app; the key is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name that says which client app holds the key")

    def handle(self, *args, name: str, **options):
        _, key = create_api_key(name=name)
        self.stdout.write(f"Created API key {name!r}. Store it now: it is not shown again.")
        self.stdout.write(key)
