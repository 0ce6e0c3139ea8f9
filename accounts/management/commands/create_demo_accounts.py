import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from accounts.services import create_api_key, create_login


class Command(BaseCommand):
    help = ("Create the demo admin, the demo product-manager login and a demo API key, "
            "printing their secrets once. Does nothing when the demo admin already exists.")

    def handle(self, *args, **options):
        if get_user_model().objects.filter(username="admin").exists():
            self.stdout.write("Demo accounts exist already (their passwords were printed at "
                              "first start; reset with `manage.py changepassword admin`).")
            return
        admin_password = secrets.token_urlsafe(12)
        pm_password = secrets.token_urlsafe(12)
        create_login(username="admin", password=admin_password, role="admin")
        create_login(username="pm", password=pm_password, role="product_manager")
        _, key = create_api_key(name="demo")
        self.stdout.write(self.style.SUCCESS("Demo accounts (shown once, keep them):"))
        self.stdout.write(f"  admin login:           admin / {admin_password}")
        self.stdout.write(f"  product manager login: pm / {pm_password}")
        self.stdout.write(f"  demo API key:          {key}")
